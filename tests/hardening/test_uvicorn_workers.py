"""Plain ``uvicorn --workers N`` (no gunicorn): each spawned worker starts fh_prefork in its
ASGI lifespan, and an update sent to one worker's Edge stream reaches the others."""

from __future__ import annotations

import signal
from collections.abc import Callable

import psutil
import pytest

from fh_prefork.testing.cluster import Cluster, _bin
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.procs import wait_for
from tests.support.servers import fh_log_lines, versions

#: real uvicorn workers
pytestmark = pytest.mark.servers

pytest.importorskip("uvicorn")


class UvicornCluster(Cluster):
    def command(self) -> list[str]:
        return [_bin("uvicorn"), "--workers", str(self.workers), "--host", "127.0.0.1",
                "--port", str(self.port), "--no-access-log", "tests.hardening.asgi_app:app"]

    def worker_pids(self) -> list[int]:
        """Children that serve (multiprocessing's resource tracker is a child too)."""
        try:
            children = psutil.Process(self.master_pid).children()
        except psutil.NoSuchProcess:
            return []
        return sorted(c.pid for c in children
                      if "resource_tracker" not in " ".join(c.cmdline()))


def test_plain_uvicorn_workers_share_flags(edge: EdgeSimulator, server_env: dict[str, str],
                                           tmp_path: Callable[..., object]) -> None:
    cluster = UvicornCluster("gunicorn", 2, server_env, log_dir=str(tmp_path))
    cluster.start()
    try:
        assert edge.wait_for_streams(2, timeout=15), edge.state()
        wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="initial flags")
        edge.push_feature(make_feature("FLAG", False, 2), stream_id=edge.streams()[0].id)
        wait_for(lambda: set(versions(cluster).values()) == {2}, 5,
                 what="update through the store")
        took = cluster.stop(signal.SIGTERM)
        log = cluster.log_text()
        assert "Traceback" not in log, log[-3000:]
        assert not [line for line in fh_log_lines(cluster) if "ERROR" in line]
        print(f"uvicorn --workers 2: SIGTERM took {took:.2f} s")
    finally:
        cluster.stop()
