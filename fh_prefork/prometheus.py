"""Prometheus metrics from every worker (install the ``prometheus`` extra).

Imported by the runtime only when ``prometheus_client`` is installed; without
it nothing here is imported and nothing changes. Each worker's store thread
exports once a second: counters as the increase of fh_prefork's own counters
since the last export, gauges as the current value. With
``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's multiprocess mode, the
gunicorn convention) the values land in the shared folder, counters are summed
over workers and gauges are kept per live worker (a ``pid`` label), so one
``/metrics`` answered by any worker shows them all; the worker-exit hook marks
the worker dead so its gauges go with it.

Metrics (names follow the Prometheus conventions; ``_total`` for counters):

==================================== ======= ==================================================
``fh_prefork_store_writes_total``     counter store writes the backend accepted
``fh_prefork_store_cas_conflicts_total`` counter compare-and-set attempts another writer won
``fh_prefork_store_errors_total``     counter backend failures (unreachable, timeouts, too large)
``fh_prefork_store_junk_entries_total`` counter unusable stored entries skipped, by read
``fh_prefork_store_heals_total``      counter features written back that the store had lost
``fh_prefork_edge_reconnects_total``  counter Edge connections opened after the first
``fh_prefork_updates_applied_total``  counter feature states applied, by ``source`` (edge, store)
``fh_prefork_store_refresh_age_seconds`` gauge seconds since the last successful store refresh
``fh_prefork_edge_connected``         gauge   1 while this worker's Edge connection is up
``fh_prefork_leader``                 gauge   1 while this worker holds the leader lease
``fh_prefork_features``               gauge   features this worker holds
==================================== ======= ==================================================
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics_core import Metric

from .leader import LEADER as LEADER_ROLE

__all__ = ["Exporter", "MultiProcessCollector", "mark_dead"]

PERIOD = 1.0

STORE_WRITES = Counter("fh_prefork_store_writes", "Store writes the backend accepted")
CAS_CONFLICTS = Counter("fh_prefork_store_cas_conflicts",
                        "Compare-and-set attempts another writer won")
STORE_ERRORS = Counter("fh_prefork_store_errors",
                       "Store backend failures (unreachable, timeouts, state too large)")
JUNK_ENTRIES = Counter("fh_prefork_store_junk_entries",
                       "Unusable stored entries skipped, counted at each read that met them")
HEALS = Counter("fh_prefork_store_heals",
                "Features written back that the store had lost or held older")
EDGE_RECONNECTS = Counter("fh_prefork_edge_reconnects",
                          "Edge connections opened after the first one of a connection's life")
UPDATES_APPLIED = Counter("fh_prefork_updates_applied",
                          "Feature states applied to the repository, by source", ["source"])
REFRESH_AGE = Gauge("fh_prefork_store_refresh_age_seconds",
                    "Seconds since the last successful store refresh",
                    multiprocess_mode="liveall")
EDGE_CONNECTED = Gauge("fh_prefork_edge_connected",
                       "1 while this worker's Edge connection is up", multiprocess_mode="liveall")
LEADER = Gauge("fh_prefork_leader", "1 while this worker holds the leader lease",
               multiprocess_mode="liveall")
FEATURES = Gauge("fh_prefork_features", "Features this worker holds",
                 multiprocess_mode="liveall")

_COUNTERS = {"writes": STORE_WRITES, "cas_conflicts": CAS_CONFLICTS, "errors": STORE_ERRORS,
             "junk_entries": JUNK_ENTRIES, "heals": HEALS}


class Exporter:
    """Turns one worker's status into metric updates; ``step`` runs on its store thread."""

    def __init__(self, status: Any) -> None:
        self._status = status           # () -> the worker's status() dict
        self._seen: dict[str, int] = {}
        self._connects: dict[Any, int] = {}

    def step(self) -> float:
        status = self._status()
        store = status.get("store") or {}
        counters = store.get("counters") or {}
        for name, metric in _COUNTERS.items():
            self._inc(name, metric, counters.get(name, 0))
        for source, count in (status.get("applied") or {}).items():
            self._inc(f"applied:{source}", UPDATES_APPLIED.labels(source=source), count)
        edge = status.get("edge") or {}
        term = edge.get("terms", 0)   # a leader's Edge connection is new each term
        reconnects = max(0, int(edge.get("connects") or 0) - 1)
        self._inc(f"reconnects:{term}", EDGE_RECONNECTS, reconnects)
        last = store.get("last_refresh")
        if last is not None:
            REFRESH_AGE.set(max(0.0, time.time() - float(last)))
        EDGE_CONNECTED.set(1 if edge.get("state") == "connected" else 0)
        LEADER.set(1 if status.get("role") == LEADER_ROLE else 0)
        FEATURES.set(int(status.get("features") or 0))
        return PERIOD

    def _inc(self, name: str, metric: Any, value: int) -> None:
        delta = value - self._seen.get(name, 0)
        if delta > 0:
            metric.inc(delta)
        self._seen[name] = value


class MultiProcessCollector(_multiprocess.MultiProcessCollector):
    """prometheus_client's multiprocess collector, minus one way to fail every scrape.

    A process creates its ``.db`` file at 0 bytes and sizes it a moment later;
    the stock collector raises ``struct.error`` on a file read in that window
    and the whole scrape answers 500 (prometheus/client_python#1199). Workers
    create their files at their first export, so a scrape during a worker's
    start, or after one killed in that window (its empty file stays for good),
    hit it. An empty file holds no samples yet, so it is skipped; a sized file
    never shrinks, so one seen sized reads whole. Use it where the stock one goes.
    """

    def collect(self) -> Iterable[Metric]:
        files = [path for path in glob.glob(os.path.join(self._path, "*.db"))
                 if _sized(path)]
        return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]


def _sized(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0
    except FileNotFoundError:   # a dead worker's live gauges, removed since the glob
        return False


def mark_dead(pid: int) -> None:
    """Drop an exited worker's live gauges (multiprocess mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
