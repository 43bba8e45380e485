"""SIGKILL a worker in the middle of a compare-and-set storm between real workers.

After each round the whole state is checked: every worker (the killed one's
replacement too) serves every one of Edge's features and the store holds them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import psutil
from pymemcache.client.base import Client

from fh_prefork import features as fs
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH
from tests.support.procs import wait_for
from tests.support.state import many_features, memcached_reader, wait_converged

StartCluster = Callable[..., Cluster]


def test_updates_of_surviving_workers_all_reach_the_store(
        start_cluster: StartCluster, edge: EdgeSimulator, memcached: object,
        prefix: str) -> None:
    edge.set_features(many_features(8))
    cluster = start_cluster("gunicorn", 6)
    assert edge.wait_for_streams(6, 10)
    port = memcached.port  # type: ignore[attr-defined]
    store = memcached_reader(f"127.0.0.1:{port}", prefix)
    client = Client(("127.0.0.1", port), connect_timeout=1, timeout=1)
    try:
        for round_ in range(3):
            streams = wait_for(lambda: (st := edge.streams()) and len(st) == 6 and all(
                (pid := edge.stream_pid(s)) and psutil.pid_exists(pid) for s in st)
                and st, 15, what="six live workers streaming")
            owners = {s.id: edge.stream_pid(s) for s in streams}
            victim_stream = streams[round_ % len(streams)]
            sent: dict[str, int | None] = {}
            for s in streams:  # a distinct update per worker: six writers at once
                key = f"R{round_}W{s.id}"
                edge.push_feature(make_feature(key, True, 1), s.id)
                sent[key] = owners[s.id]
                owner = owners[s.id]
                if s.id == victim_stream.id and owner:
                    os.kill(owner, signal.SIGKILL)  # mid-storm
            survivors = {k for k, pid in sent.items() if pid != owners[victim_stream.id]}

            def stored_keys() -> set[str]:
                raw = client.get(f"{prefix}_env-srv")
                return {f["key"] for f in fs.decode(raw, 10**8).features}

            def stored_all(expected: set[str] = survivors) -> bool:
                return expected <= stored_keys()

            wait_for(stored_all, 2 * REFRESH * 1.2 + 3,
                     what=f"round {round_}: every surviving worker's update in the store")
            # and nothing else lost: the replacement worker reads Edge and the store
            wait_converged(edge, cluster, store, 2 * REFRESH * 1.2 + 15,
                           f"round {round_}: every feature, every worker, the store")
    finally:
        client.close()
