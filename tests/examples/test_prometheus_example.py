"""The Prometheus example: every worker's metrics in one scrape, counters that move."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from pymemcache.client.base import Client

from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.memcached import Memcached
from tests.support.procs import wait_for
from tests.support.proxy import FaultyProxy

from .conftest import API_KEY, BIN, EXAMPLES, Server

pytest.importorskip("prometheus_client", reason="pip install -e '.[test]'")


def scrape(server: Server) -> str:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


def scrape_or_none(server: Server) -> str | None:
    """A scrape inside a wait: a failed one is retried until the wait's deadline."""
    try:
        return scrape(server)
    except OSError as err:       # HTTPError and URLError included
        print(f"scrape failed, retrying: {err}")
        return None


def samples(text: str, name: str) -> dict[str, float]:
    """Label set (as written) -> value, for one metric name."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"{name}(\{{[^}}]*\}})? ([0-9.eE+-]+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def test_one_scrape_shows_every_worker_and_counters_move_after_a_conflict(
        start_server: Callable[..., Server], edge: EdgeSimulator, tmp_path: Path,
        example_env: dict[str, str]) -> None:
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    prefix = "prom"
    with Memcached() as memcached, FaultyProxy(memcached.port, delay=0.05) as proxy:
        example_env.update({"PROMETHEUS_MULTIPROC_DIR": str(multiproc), "WEB_CONCURRENCY": "4",
                            "FH_PREFORK_STORE": f"memcache://{proxy.address}",
                            "FH_PREFORK_PREFIX": prefix})
        server = start_server([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"],
                              cwd=EXAMPLES / "prometheus")
        server.serving("/", lambda b: isinstance(b, dict) and b.get("version") == 7)
        workers = {c.pid for c in psutil.Process(server.proc.pid).children()}
        assert len(workers) == 4

        def every_worker_reports() -> str | None:
            text = scrape_or_none(server)
            if text is None:
                return None
            pids = {int(p) for p in re.findall(r'fh_prefork_features\{pid="(\d+)"\} 1\.0', text)}
            return text if workers <= pids else None

        text = wait_for(every_worker_reports, 15, what="every worker's gauges in one scrape")
        # what a worker killed between creating its file and sizing it leaves for good
        # (prometheus/client_python#1199): the stock collector answers 500 from then on
        (multiproc / "counter_4194301.db").touch()
        text = wait_for(every_worker_reports, 15, what="every worker's gauges past an empty file")
        for name in ("fh_prefork_edge_connected", "fh_prefork_store_refresh_age_seconds"):
            assert len(samples(text, name)) >= 4, name
        before = sum(samples(text, "fh_prefork_store_cas_conflicts_total").values())
        applied = samples(text, "fh_prefork_updates_applied_total")
        assert any('source="edge"' in labels for labels in applied), applied

        # force conflicts: rewrite the data key (same bytes, new CAS token) all through the
        # slowed-down read-to-CAS window of the workers' next write
        key = f"{prefix}_{API_KEY.split('/')[1]}"
        client = Client(("127.0.0.1", memcached.port), default_noreply=False)
        stop = threading.Event()

        def churn() -> None:
            deadline = time.monotonic() + 5
            while not stop.is_set() and time.monotonic() < deadline:
                raw = client.get(key)
                if raw is not None:
                    client.set(key, raw)
                time.sleep(0.005)

        churner = threading.Thread(target=churn)
        churner.start()
        try:
            edge.push_feature(make_feature("NEW_CHECKOUT", False, 8))
            wait_for(lambda: sum(samples(scrape_or_none(server) or "",
                                         "fh_prefork_store_cas_conflicts_total").values()) > before,
                     10, what="the conflict counter to move")
        finally:
            stop.set()
            churner.join()
            client.close()
        server.serving("/", lambda b: isinstance(b, dict) and b.get("version") == 8)
        wrote = sum(samples(scrape(server), "fh_prefork_store_writes_total").values())
        assert wrote >= 1
        print("metric names:", sorted({line.split("{")[0].split(" ")[0]
                                       for line in scrape(server).splitlines()
                                       if line.startswith("fh_prefork_")}))
