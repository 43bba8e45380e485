"""gunicorn gevent workers: fh_prefork starts after gevent patches, so nothing blocks the hub.

Before: the store and Edge threads started in post_fork, before the worker patched, as native
threads; every worker exit printed two ``Exception ignored in thread started by ... KeyError``
tracebacks and SIGTERM took about a second longer than for the same app without fh_prefork.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from fh_prefork.bench.cluster import Cluster
from fh_prefork.edge_simulator import EdgeSimulator, make_feature
from tests.support.procs import wait_for
from tests.support.servers import versions

pytest.importorskip("gevent")

StartCluster = Callable[..., Cluster]
GEVENT = ("-k", "gevent")


class PlainCluster(Cluster):
    """gunicorn with gevent workers serving an app that never imports fh_prefork."""

    def command(self) -> list[str]:
        return [*super().command()[:1], "-w", str(self.workers), "-b", f"127.0.0.1:{self.port}",
                "--graceful-timeout", "10", *GEVENT, "tests.hardening.green_app:application"]

    def _answers(self) -> bool:
        try:
            return bool(self.get("/", timeout=2) == "ok")
        except (OSError, ValueError):
            return False


def test_gevent_workers_converge_green_and_exit_clean(
        start_cluster: StartCluster, edge: EdgeSimulator, server_env: dict[str, str],
        tmp_path: Path) -> None:
    # the same server and worker class without fh_prefork: how long its SIGTERM takes
    plain = PlainCluster("gunicorn", 2, server_env, log_dir=str(tmp_path))
    plain.start()
    time.sleep(0.5)  # let the plain workers finish booting, as ours have below
    baseline = plain.stop()

    # gevent's default resolver runs getaddrinfo on a pool thread of its own; "block" does not,
    # so the only native thread left is the hub's
    cluster = start_cluster("gunicorn", 2, GEVENT, env={"GEVENT_RESOLVER": "block"})
    workers = cluster.worker_pids()
    wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="initial flags")
    assert edge.wait_for_streams(2, timeout=10), edge.state()

    # store and Edge run as greenlets on the worker's hub, not as native threads
    for pid in workers:
        assert psutil.Process(pid).num_threads() == 1, psutil.Process(pid).threads()

    edge.push_feature(make_feature("FLAG", False, 2), stream_id=edge.streams()[0].id)
    wait_for(lambda: set(versions(cluster).values()) == {2}, 5, what="update in every worker")
    for status in cluster.statuses().values():
        assert status["edge_state"] == "connected", status
        assert status["store"]["counters"]["refreshes"] >= 1, status

    took = cluster.stop()
    log = cluster.log_text()
    print(f"gevent SIGTERM: {took:.2f} s with fh_prefork, {baseline:.2f} s without")
    assert "Exception ignored" not in log and "Traceback" not in log, log[-3000:]
    assert took < baseline + 0.5, (took, baseline)
