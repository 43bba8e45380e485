"""Prometheus in leader mode on real gunicorn and uWSGI masters: one leader counts, the dead don't.

The scrape is prometheus_client's multiprocess collection of the shared folder
(what any worker's ``/metrics`` answers), made by the test itself: the probe
app serves no ``/metrics``. gunicorn runs the README quick-start hooks (no
``child_exit``) and uWSGI runs no Python in its master: in both a SIGKILLed
leader's series must go, through the workers' sweep.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator
from tests.leader.test_leader_servers import LEADER_ENV
from tests.servers.conftest import edge, server_env, start_cluster  # noqa: F401  # fixtures
from tests.support.procs import wait_for

pytest.importorskip("prometheus_client", reason="pip install --group dev -e .")


def scrape(folder: Path) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from fh_prefork.prometheus import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    return generate_latest(registry).decode()


def by_pid(text: str, name: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for m in re.finditer(rf'^{name}\{{pid="(\d+)"\}} ([0-9.eE+-]+)$', text, re.M):
        out[int(m.group(1))] = float(m.group(2))
    return out


def series_pids(text: str) -> set[int]:
    return {int(p) for p in re.findall(r'^fh_prefork_\w+\{[^}]*pid="(\d+)"', text, re.M)}


@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_one_leader_counts_after_the_leader_is_sigkilled(
        kind: str, start_cluster: Callable[..., Cluster],  # noqa: F811
        edge: EdgeSimulator, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "prom"
    folder.mkdir()
    cluster = start_cluster(kind, 3, env={**LEADER_ENV, "PROMETHEUS_MULTIPROC_DIR": str(folder)})
    master = cluster.master_pid
    last: list[str] = [""]

    def one_leader(exclude: int | None = None) -> int | None:
        text = last[0] = scrape(folder)
        workers = set(cluster.worker_pids())
        leaders = by_pid(text, "fh_prefork_leader")
        leader = next((pid for pid, v in leaders.items() if v == 1), None)
        ok = (len(workers) == 3 and set(leaders) == workers and sum(leaders.values()) == 1
              and series_pids(text) <= workers and leader != exclude)
        return leader if ok else None

    try:
        found = wait_for(one_leader, 30, interval=0.2, what="one leader among the workers")
        assert found is not None and master not in series_pids(last[0])
        leader = found
        os.kill(leader, signal.SIGKILL)
        killed_at = time.monotonic()
        new = wait_for(lambda: one_leader(exclude=leader), 40, interval=0.2,
                       what="one new leader and no series for the killed one")
    except AssertionError as err:
        raise AssertionError(f"{err}; workers {cluster.worker_pids()}, master {master}; "
                             f"last scrape:\n{last[0]}") from None
    print(f"{kind}: new leader {new}; sum(fh_prefork_leader) == 1 and the killed leader's "
          f"series gone {time.monotonic() - killed_at:.2f} s after the SIGKILL")
    text = scrape(folder)
    assert leader not in series_pids(text) and master not in series_pids(text), text
    assert sum(by_pid(text, "fh_prefork_leader").values()) == 1, text
