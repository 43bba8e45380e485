"""The embedded store's file deleted, truncated or swapped for a foreign one while workers run.

After each fault the whole state is checked: every worker serves every one of
Edge's features and the file holds them (``wait_converged``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH
from tests.support.procs import wait_for
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
