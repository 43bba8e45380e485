"""The Prometheus example: every worker's metrics in one scrape, counters that move."""

from __future__ import annotations

import os
import re
import signal
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

pytest.importorskip("prometheus_client", reason="pip install --group dev -e .")


def scrape(server: Server) -> str:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        return str(resp.read().decode())


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

        def four_workers() -> set[int] | None:
            pids = {c.pid for c in psutil.Process(server.proc.pid).children()}
            return pids if len(pids) == 4 else None

        workers = wait_for(four_workers, 15, what="gunicorn's four workers")

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
        found = wait_for(every_worker_reports, 15,
                         what="every worker's gauges past an empty file")
        assert found is not None
        text = found
        for name in ("fh_prefork_edge_connected", "fh_prefork_store_refresh_age_seconds"):
            assert len(samples(text, name)) >= 4, name
        before: float = sum(samples(text, "fh_prefork_store_cas_conflicts_total").values())
        wrote: float = sum(samples(text, "fh_prefork_store_writes_total").values())
        applied = samples(text, "fh_prefork_updates_applied_total")
        assert any('source="edge"' in labels for labels in applied), applied

        # force conflicts: rewrite the data key (same bytes, new CAS token) all through the
        # slowed-down read-to-CAS window of the workers' next write, until memcached refuses one
        # (its own cas_badval counter, read on a client of its own). A store
        # thread exports its counters between flushes, and a flush under the churn makes up
        # to 64 attempts, so the counters show the conflicts once the churn stops and the
        # write lands: wait for that, bounded, rather than for the counter while churning
        key = f"{prefix}_{API_KEY.split('/')[1]}"
        client = Client(("127.0.0.1", memcached.port), default_noreply=False)
        stats = Client(("127.0.0.1", memcached.port), default_noreply=False)
        stop = threading.Event()

        def churn() -> None:
            while not stop.is_set():
                raw = client.get(key)
                if raw is not None:
                    client.set(key, raw)
                time.sleep(0.005)

        churner = threading.Thread(target=churn)
        churner.start()
        try:
            refused = stats.stats()[b"cas_badval"]
            edge.push_feature(make_feature("NEW_CHECKOUT", False, 8))
            server.serving("/", lambda b: isinstance(b, dict) and b.get("version") == 8)
            # churn until memcached itself has refused a worker's compare-and-set
            wait_for(lambda: stats.stats()[b"cas_badval"] > refused, 20,
                     what="memcached to refuse a compare-and-set")
        finally:
            stop.set()
            churner.join()
            client.close()
            stats.close()

        def exported(name: str) -> float:
            return sum(samples(scrape_or_none(server) or "", name).values())

        wait_for(lambda: exported("fh_prefork_store_cas_conflicts_total") > before, 20,
                 what="the conflict counter to move")
        wait_for(lambda: exported("fh_prefork_store_writes_total") > wrote, 20,
                 what="the write of version 8, once the conflicts stop, in the counters")
        print("metric names:", sorted({line.split("{")[0].split(" ")[0]
                                       for line in scrape(server).splitlines()
                                       if line.startswith("fh_prefork_")}))


def pid_values(text: str, name: str) -> dict[int, float]:
    """pid -> value of an unlabelled per-worker gauge (multiprocess ``liveall``)."""
    out: dict[int, float] = {}
    for labels, value in samples(text, name).items():
        m = re.search(r'pid="(\d+)"', labels)
        if m:
            out[int(m.group(1))] = value
    return out


def series_pids(text: str) -> set[int]:
    """Every pid any fh_prefork series names."""
    return {int(p) for line in text.splitlines() if line.startswith("fh_prefork_")
            for p in re.findall(r'pid="(\d+)"', line)}


def live_workers(server: Server) -> set[int]:
    return {c.pid for c in psutil.Process(server.proc.pid).children()
            if c.status() != psutil.STATUS_ZOMBIE}


#: gunicorn.conf.py with the README quick-start hooks only (no child_exit): a dead worker's
#: series must go anyway (the other workers sweep the folder).
QUICK_START_CONF = """
import os
from fh_prefork.gunicorn import on_starting, post_fork, worker_exit  # noqa: F401
bind = os.environ["BIND"]
workers = int(os.environ["WEB_CONCURRENCY"])
"""


@pytest.mark.parametrize("hooks", ["example", "quick-start"])
def test_a_sigkilled_leader_leaves_no_series_behind_and_one_leader_counts(
        hooks: str, start_server: Callable[..., Server], edge: EdgeSimulator, tmp_path: Path,
        example_env: dict[str, str]) -> None:
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    example_env.update({"PROMETHEUS_MULTIPROC_DIR": str(multiproc), "WEB_CONCURRENCY": "4",
                        "FH_PREFORK_EDGE_MODE": "leader", "FH_PREFORK_LEASE_SECONDS": "3"})
    conf = "gunicorn.conf.py"
    if hooks == "quick-start":
        conf = str(tmp_path / "quick_start_conf.py")
        Path(conf).write_text(QUICK_START_CONF)
    server = start_server([str(BIN / "gunicorn"), "-c", conf, "app:app"],
                          cwd=EXAMPLES / "prometheus")
    server.serving("/", lambda b: isinstance(b, dict) and b.get("version") == 7)
    master = server.proc.pid
    last: list[str] = [""]

    def one_leader_among_live_workers(exclude: int | None = None) -> int | None:
        text = scrape_or_none(server)
        if text is None:
            return None
        last[0] = text
        workers = live_workers(server)
        leaders = pid_values(text, "fh_prefork_leader")
        ok = (len(workers) == 4 and set(leaders) == workers and sum(leaders.values()) == 1
              and series_pids(text) <= workers)
        leader = next((pid for pid, v in leaders.items() if v == 1), None)
        return leader if ok and leader != exclude else None

    try:
        found = wait_for(one_leader_among_live_workers, 30, interval=0.2,
                         what="one leader among the four workers' gauges")
    except AssertionError as err:
        raise AssertionError(f"{err}; last scrape:\n{last[0]}") from None
    assert found is not None
    leader = found
    text = last[0]
    assert master not in series_pids(text), "the master has series"
    info = samples(text, "fh_prefork_info")
    assert len(info) == 4 and all('store="file"' in k and 'edge_mode="leader"' in k
                                  for k in info), info
    roles = samples(text, "fh_prefork_role")
    assert sum(v for k, v in roles.items() if 'role="leader"' in k) == 1, roles
    assert sum(v for k, v in roles.items() if 'role="follower"' in k) == 3, roles
    assert set(pid_values(text, "fh_prefork_store_healthy").values()) == {1.0}

    os.kill(leader, signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        new = wait_for(lambda: one_leader_among_live_workers(exclude=leader), 30, interval=0.2,
                       what="one new leader, no series for the killed one")
    except AssertionError as err:
        raise AssertionError(f"{err}; last scrape:\n{last[0]}") from None
    print(f"{hooks} hooks: new leader {new} counted alone, killed leader's series gone, "
          f"{time.monotonic() - killed_at:.2f} s after the SIGKILL")
    for _ in range(5):      # and it stays so
        text = scrape(server)
        assert sum(pid_values(text, "fh_prefork_leader").values()) == 1, text
        assert leader not in series_pids(text) and master not in series_pids(text), text
        time.sleep(0.3)
    assert not list(multiproc.glob(f"gauge_live*_{leader}.db")), "the dead worker's gauges"
    assert not list(multiproc.glob(f"*_{master}.db")), "the master wrote metrics"


def test_metrics_without_a_store(start_server: Callable[..., Server], edge: EdgeSimulator,
                                 tmp_path: Path, example_env: dict[str, str]) -> None:
    """FH_PREFORK_STORE=none: no store thread, and every worker still exports."""
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    example_env.update({"PROMETHEUS_MULTIPROC_DIR": str(multiproc), "WEB_CONCURRENCY": "2",
                        "FH_PREFORK_STORE": "none"})
    server = start_server([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"],
                          cwd=EXAMPLES / "prometheus")
    server.serving("/", lambda b: isinstance(b, dict) and b.get("version") == 7)

    def every_worker_exports() -> str | None:
        text = scrape_or_none(server)
        if text is None:
            return None
        features, workers = pid_values(text, "fh_prefork_features"), live_workers(server)
        return text if (len(workers) == 2 and set(features) == workers
                        and set(features.values()) == {1.0}) else None

    found = wait_for(every_worker_exports, 20, interval=0.2,
                     what="every worker's gauges without a store")
    assert found is not None
    text = found
    info = samples(text, "fh_prefork_info")
    assert len(info) == 2 and all('store="none"' in k for k in info), info
    assert set(pid_values(text, "fh_prefork_edge_connected").values()) == {1.0}
    assert set(pid_values(text, "fh_prefork_store_healthy").values()) == {0.0}
    applied: float = sum(samples(text, "fh_prefork_updates_applied_total").values())
    assert applied >= 2
