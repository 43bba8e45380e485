"""gunicorn gevent workers: fh_prefork starts after gevent patches, so nothing blocks the hub.

Before: the store and Edge threads started in post_fork, before the worker patched, as native
threads; every worker exit printed two ``Exception ignored in thread started by ... KeyError``
tracebacks and SIGTERM took about a second longer than for the same app without fh_prefork.

gevent's worker loop wakes once a second, so how long a whole SIGTERM takes varies by up to a
second between runs of the same server, with or without fh_prefork. What fh_prefork adds is
its worker_exit hook: measured on its own (a few ms), and the rest of the exit, from that
hook to the process gone, is printed (about 0.3 s on this machine for a worker without
fh_prefork).
"""

from __future__ import annotations

import re
import shutil
import ssl
import threading
import time
from pathlib import Path

import psutil
import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.hardening.tls import make_pki
from tests.support.procs import wait_for
from tests.support.servers import versions

#: real gunicorn gevent workers
pytestmark = pytest.mark.servers

pytest.importorskip("gevent")

#: gevent's default resolver runs getaddrinfo on a pool thread of its own; "block" does not,
#: so the only native thread left in a worker is the hub's.
ENV = {"GEVENT_RESOLVER": "block"}


class GeventCluster(Cluster):
    def command(self) -> list[str]:
        command = super().command()
        command[command.index("python:fh_prefork.testing.gunicorn_conf")] = (
            "python:tests.hardening.gevent_conf")
        return [*command[:-1], "-k", "gevent", command[-1]]


def watch_exits(pids: list[int], gone: dict[int, float], stop: threading.Event) -> None:
    while not stop.is_set() and len(gone) < len(pids):
        for pid in pids:
            if pid in gone:
                continue
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    continue
            except psutil.NoSuchProcess:
                pass
            gone[pid] = time.time()
        time.sleep(0.002)


@pytest.mark.parametrize("store", ["memcache", "file"])
def test_gevent_workers_converge_green_and_exit_clean(
        edge: EdgeSimulator, server_env: dict[str, str], tmp_path: Path, store: str) -> None:
    env = {**server_env, **ENV}
    if store == "file":
        env["FH_PREFORK_STORE"] = f"file://{tmp_path}/store"
    cluster = GeventCluster("gunicorn", 2, env, log_dir=str(tmp_path)).start()
    try:
        workers = cluster.worker_pids()
        wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="initial flags")
        assert edge.wait_for_streams(2, timeout=10), edge.state()

        # store and Edge run as greenlets on the worker's hub, not as native threads
        for pid in workers:
            assert psutil.Process(pid).num_threads() == 1, psutil.Process(pid).threads()

        edge.push_feature(make_feature("FLAG", False, 2), stream_id=edge.streams()[0].id)
        wait_for(lambda: set(versions(cluster).values()) == {2}, 5,
                 what="update in every worker")
        # the server side counts a stream before the worker's client has read its headers
        wait_for(lambda: all(s["edge_state"] == "connected"
                             for s in cluster.statuses().values()), 5,
                 what="every worker's own stream connected")

        gone: dict[int, float] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=watch_exits, args=(workers, gone, stop))
        watcher.start()
        took = cluster.stop()
        stop.set()
        watcher.join()
    finally:
        cluster.stop()
    log = cluster.log_text()
    assert "Exception ignored" not in log and "Traceback" not in log, log[-3000:]
    hooks = [(float(at), float(spent)) for at, spent in
             re.findall(r"fh-test worker_exit at ([0-9.]+) took ([0-9.]+)", log)]
    assert len(hooks) == 2 and len(gone) == 2, (hooks, gone)
    exits = [g - at for g, (at, _) in zip(sorted(gone.values()), sorted(hooks), strict=True)]
    print(f"gevent/{store}: SIGTERM {took:.2f} s; fh_prefork's worker_exit "
          f"{', '.join(f'{spent * 1000:.0f} ms' for _, spent in hooks)}; from it to the "
          f"process gone {', '.join(f'{e * 1000:.0f} ms' for e in exits)}")
    # a hook blocking the hub costs about 1 s (the old join); 0.5 s leaves room for load
    assert max(spent for _, spent in hooks) < 0.5, hooks


def test_gevent_workers_reach_an_https_edge(server_env: dict[str, str], tmp_path: Path) -> None:
    """Production Edge is https. A worker makes its TLS context on its Edge greenlet, after
    gevent patched: urllib3's own, from the master's unpatched ``ssl``, recursed in the
    handshake until RecursionError, and the worker never connected."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a CA")
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    with EdgeSimulator(keepalive_interval=1.0, tls=tls) as https_edge:
        https_edge.set_features([make_feature("FLAG", True, 1)])
        env = {**server_env, **ENV, "FEATUREHUB_EDGE_URL": https_edge.url,
               "SSL_CERT_FILE": str(pki.ca), "FH_PREFORK_STORE": f"file://{tmp_path}/store"}
        cluster = GeventCluster("gunicorn", 2, env, log_dir=str(tmp_path)).start()
        try:
            assert https_edge.wait_for_streams(2, timeout=10), cluster.log_text()[-3000:]
            # the flags may come through the store first: wait for each worker's own stream
            wait_for(lambda: all(s["edge_state"] == "connected"
                                 for s in cluster.statuses().values()), 10,
                     what="every worker's https stream connected")
            wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="flags over https")
            https_edge.push_feature(make_feature("FLAG", False, 2))
            wait_for(lambda: set(versions(cluster).values()) == {2}, 5, what="an https update")
        finally:
            cluster.stop()
    assert "maximum recursion depth" not in cluster.log_text()
