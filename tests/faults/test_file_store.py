"""The embedded store's file deleted, truncated or swapped for a foreign one while workers run.

After each fault the whole state is checked: every worker serves every one of
Edge's features and the file holds them (``wait_converged``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH
from tests.support.cost import assert_cost, measure_cost
from tests.support.procs import hold_for, wait_for
from tests.support.servers import fh_log_lines
from tests.support.state import converged, describe, edge_state, worker_states

from .whole_state import StoreReader, data_key, file_reader, many_features, wait_converged

StartCluster = Callable[..., Cluster]
BOUND = 2 * REFRESH * 1.2 + 3.0

FileCluster = tuple[Cluster, Path, StoreReader]


@pytest.fixture
def file_cluster(start_cluster: StartCluster, edge: EdgeSimulator, tmp_path: Path,
                 prefix: str) -> FileCluster:
    folder = tmp_path / "store"
    edge.set_features(many_features(8))
    cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": f"file://{folder}"})
    store = file_reader(folder, prefix)
    wait_converged(edge, cluster, store, 10, "store written")
    return cluster, folder / f"{data_key(prefix)}.json", store


def test_deleted_file_is_written_again(file_cluster: FileCluster, edge: EdgeSimulator) -> None:
    cluster, data, store = file_cluster
    data.unlink()
    wait_converged(edge, cluster, store, BOUND, "file re-seeded with every feature")


def test_truncated_file_is_repaired(file_cluster: FileCluster, edge: EdgeSimulator) -> None:
    cluster, data, store = file_cluster
    with open(data, "r+b") as f:
        f.truncate(10)
    wait_converged(edge, cluster, store, BOUND, "file repaired")
    edge.push_feature(make_feature("FLAG", False, 2), edge.streams()[0].id)
    wait_converged(edge, cluster, store, BOUND, "updates flow again, nothing else lost")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the file to another user")
def test_foreign_file_is_refused_while_running(file_cluster: FileCluster,
                                               edge: EdgeSimulator) -> None:
    cluster, data, store = file_cluster
    forged = data.with_suffix(".forged")
    forged.write_text(json.dumps([make_feature("FLAG", False, 999)]))
    os.chown(forged, 65534, 65534)
    os.rename(forged, data)  # an attacker swaps in their own file
    wait_for(lambda: all(not s["store"]["healthy"] and "owned by uid 65534" in
                         (s["store"]["last_error"] or "")
                         for s in cluster.statuses().values()), BOUND, what="refusal")
    expected, workers = edge_state(edge), worker_states(cluster)
    assert converged(expected, workers, expected), \
        "forged flags were served:\n" + describe(expected, workers, expected)
    data.unlink()  # the operator removes it: workers write a clean file again
    wait_converged(edge, cluster, store, BOUND, "clean file with every feature")
    assert os.stat(data).st_uid == os.geteuid()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs of the test's own: filled, it fails writes with ENOSPC as a full disk does."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem is full (ENOSPC), bounded by the tmpfs's size."""
    with open(path, "wb", buffering=0) as f:
        for _ in range(1024):      # 1 MB tmpfs, 4 KiB at a time: full long before the end
            try:
                f.write(b"x" * 4096)
            except OSError as err:
                assert err.errno == 28, err   # ENOSPC
                return
    raise AssertionError("the small disk never filled")


def test_a_full_disk_is_logged_as_full_a_bounded_number_of_times_and_costs_nothing(
        start_cluster: StartCluster, edge: EdgeSimulator, small_disk: Path,
        prefix: str) -> None:
    """Before: 4 workers wrote 83 identical WARNINGs in 13 s, "cannot reach ... No space left
    on device": each write attempt logged anew because the reads between them worked."""
    folder = small_disk / "store"
    edge.set_features(many_features(8))
    cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": f"file://{folder}"})
    store = file_reader(folder, prefix)
    wait_converged(edge, cluster, store, 10, "store written")
    before = len(fh_log_lines(cluster))
    filler = small_disk / "filler"
    try:
        fill(filler)
        with measure_cost(cluster) as cost:
            for version in range(2, 8):     # an update every 2 s: every worker keeps failing
                edge.push_feature(make_feature("FLAG", version % 2 == 0, version))
                hold_for(2)
        wait_for(lambda: all(not s["store"]["healthy"] for s in cluster.statuses().values()),
                 BOUND, what="every worker to see the full disk")
        # about the store: a worker's late Edge "connected" line is not the disk's
        during = [line for line in fh_log_lines(cluster)[before:] if str(folder) in line]
        print(f"{len(during)} fh_prefork line(s) in {cost.seconds:.0f} s of a full disk, "
              f"4 workers:\n" + "\n".join(during))
        assert_cost(cost)
        assert during, "a full disk went unlogged"
        assert len(during) <= 4 * 2, during     # once per worker (and one rate-limited repeat)
        assert all(" is full" in line for line in during), during
        assert not [line for line in during if "cannot reach" in line or "unreachable" in line]
        assert all("full" in (s["store"]["last_error"] or "")
                   for s in cluster.statuses().values())
    finally:
        filler.unlink(missing_ok=True)
    wait_converged(edge, cluster, store, BOUND * 2, "every update written once space is freed")
    wait_for(lambda: sum("is back" in line for line in fh_log_lines(cluster)[before:]) >= 4,
             BOUND, what="each worker to say the store is back")
    after = fh_log_lines(cluster)[before:]
    assert len(after) <= 4 * 3, after
