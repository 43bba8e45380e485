"""The embedded store's file deleted, truncated or swapped for a foreign one while workers run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fh_prefork.bench.cluster import Cluster
from fh_prefork.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH
from tests.support.procs import wait_for
from tests.support.servers import versions

StartCluster = Callable[..., Cluster]
BOUND = 2 * REFRESH * 1.2 + 2


def held(path: Path) -> dict[str, int] | None:
    try:
        return {f["key"]: f["version"] for f in json.loads(path.read_bytes())}
    except (OSError, ValueError, TypeError, KeyError):
        return None


@pytest.fixture
def file_cluster(start_cluster: StartCluster, tmp_path: Path, prefix: str
                 ) -> tuple[Cluster, Path]:
    folder = tmp_path / "store"
    cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": f"file://{folder}"})
    data = folder / f"{prefix}_env-srv.json"
    wait_for(lambda: held(data) == {"FLAG": 1, "OTHER": 1}, 10, what="store written")
    return cluster, data


def test_deleted_file_is_written_again(file_cluster: tuple[Cluster, Path]) -> None:
    cluster, data = file_cluster
    data.unlink()
    wait_for(lambda: held(data) == {"FLAG": 1, "OTHER": 1}, BOUND, what="file re-seeded")
    assert set(versions(cluster).values()) == {1}


def test_truncated_file_is_repaired(file_cluster: tuple[Cluster, Path],
                                    edge: EdgeSimulator) -> None:
    cluster, data = file_cluster
    with open(data, "r+b") as f:
        f.truncate(10)
    wait_for(lambda: held(data) == {"FLAG": 1, "OTHER": 1}, BOUND, what="file repaired")
    edge.push_feature(make_feature("FLAG", False, 2), edge.streams()[0].id)
    wait_for(lambda: set(versions(cluster).values()) == {2}, BOUND, what="updates flow again")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the file to another user")
def test_foreign_file_is_refused_while_running(file_cluster: tuple[Cluster, Path]) -> None:
    cluster, data = file_cluster
    forged = data.with_suffix(".forged")
    forged.write_text(json.dumps([make_feature("FLAG", False, 999)]))
    os.chown(forged, 65534, 65534)
    os.rename(forged, data)  # an attacker swaps in their own file
    wait_for(lambda: all(not s["store"]["healthy"] and "owned by uid 65534" in
                         (s["store"]["last_error"] or "")
                         for s in cluster.statuses().values()), BOUND, what="refusal")
    assert set(versions(cluster).values()) == {1}, "forged flags were served"
    data.unlink()  # the operator removes it: workers write a clean file again
    wait_for(lambda: held(data) == {"FLAG": 1, "OTHER": 1}, BOUND, what="clean file")
    assert os.stat(data).st_uid == os.geteuid()
