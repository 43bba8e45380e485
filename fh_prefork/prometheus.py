"""Prometheus metrics from every worker (install the ``prometheus`` extra).

Imported by the runtime only when ``prometheus_client`` is installed; without
it nothing here is imported and nothing changes. Each worker exports once a
second (on its store thread, or on a timer thread of its own when it has no
store: ``FH_PREFORK_STORE=none`` or a store that failed to open): counters as
the increase of fh_prefork's own counters since the last export, gauges as the
current value. With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's
multiprocess mode, the gunicorn convention) the values land in the shared
folder, counters are summed over workers and gauges are kept per live worker
(a ``pid`` label), so one ``/metrics`` answered by any worker shows them all.

Only workers have series: the metrics are created in a worker, at its first
export, never in the master (an import there would give the master a series
of zeros in multiprocess mode). A worker's gauges go when it does: its
``worker_exit`` marks it dead; for a worker that could not (SIGKILL, the OOM
killer) gunicorn's ``child_exit`` hook in :mod:`fh_prefork.gunicorn` does it in
the master, and every worker sweeps the folder for dead workers' gauges at its
first export and every ``SWEEP_EVERY`` exports after (uWSGI runs no Python in
its master, so there a respawned worker's first export is what clears them).

Metrics (names follow the Prometheus conventions; ``_total`` for counters):

====================================== ======= ================================================
``fh_prefork_info``                     gauge   1, labels ``version``, ``store`` (memcache, redis,
                                                file, none), ``edge_mode`` (every, leader)
``fh_prefork_store_writes_total``       counter store writes the backend accepted
``fh_prefork_store_cas_conflicts_total`` counter compare-and-set attempts another writer won
``fh_prefork_store_errors_total``       counter backend failures (unreachable, timeouts, too large)
``fh_prefork_store_junk_entries_total`` counter unusable stored entries skipped, by read
``fh_prefork_store_heals_total``        counter features written back that the store had lost
``fh_prefork_edge_reconnects_total``    counter Edge connections opened after the first
``fh_prefork_updates_applied_total``    counter feature states applied, by ``source`` (edge, store)
``fh_prefork_store_refresh_age_seconds`` gauge  seconds since the last successful store refresh
``fh_prefork_store_healthy``            gauge   1 while the store answers (0 when failing or none)
``fh_prefork_push_connected``           gauge   1 while store change notifications arrive
                                                (Redis pub/sub, inotify); 0 otherwise
``fh_prefork_edge_connected``           gauge   1 while this worker's Edge connection is up
``fh_prefork_edge_state``               gauge   1 for this worker's Edge connection state
                                                (``state`` label: connected, connecting, backoff,
                                                key_not_found, stale, standby, none...)
``fh_prefork_edge_key_not_found``       gauge   1 while Edge says the API key does not exist
                                                (a follower learns it from the leader's lease)
``fh_prefork_leader``                   gauge   1 while this worker holds the leader lease
``fh_prefork_role``                     gauge   leader mode: 1 for this worker's ``role``
                                                (leader, follower, fallback), 0 for the others
``fh_prefork_features``                 gauge   features this worker holds
====================================== ======= ================================================
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil
from prometheus_client import Counter, Gauge
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics_core import Metric

from .health import WorkerHealth
from .leader import FALLBACK, FOLLOWER
from .leader import LEADER as LEADER_ROLE

__all__ = ["Exporter", "MultiProcessCollector", "mark_dead", "sweep_dead"]

PERIOD = 1.0
#: Exports between two sweeps of the multiprocess folder for dead workers' gauges.
SWEEP_EVERY = 10
ROLES = (LEADER_ROLE, FOLLOWER, FALLBACK)


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> Gauge:
    """A gauge kept per live worker (``pid`` label), gone with its worker."""
    return Gauge(name, documentation, list(labels), multiprocess_mode="liveall")


class _Metrics:
    """Every metric, created once per process at its first export (never in a master)."""

    def __init__(self) -> None:
        self.info = _gauge("fh_prefork_info", "fh_prefork's version, store kind and edge mode",
                           ["version", "store", "edge_mode"])
        self.counters = {
            "writes": Counter("fh_prefork_store_writes", "Store writes the backend accepted"),
            "cas_conflicts": Counter("fh_prefork_store_cas_conflicts",
                                     "Compare-and-set attempts another writer won"),
            "errors": Counter("fh_prefork_store_errors",
                              "Store backend failures (unreachable, timeouts, state too large)"),
            "junk_entries": Counter("fh_prefork_store_junk_entries",
                                    "Unusable stored entries skipped, counted at each read "
                                    "that met them"),
            "heals": Counter("fh_prefork_store_heals",
                             "Features written back that the store had lost or held older"),
        }
        self.edge_reconnects = Counter("fh_prefork_edge_reconnects",
                                       "Edge connections opened after the first one of a "
                                       "connection's life")
        self.updates_applied = Counter("fh_prefork_updates_applied",
                                       "Feature states applied to the repository, by source",
                                       ["source"])
        self.refresh_age = _gauge("fh_prefork_store_refresh_age_seconds",
                                  "Seconds since the last successful store refresh")
        self.store_healthy = _gauge("fh_prefork_store_healthy",
                                    "1 while the store answers; 0 when failing or no store")
        self.push_connected = _gauge("fh_prefork_push_connected",
                                     "1 while store change notifications arrive")
        self.edge_connected = _gauge("fh_prefork_edge_connected",
                                     "1 while this worker's Edge connection is up")
        self.edge_state = _gauge("fh_prefork_edge_state",
                                 "1 for this worker's Edge connection state", ["state"])
        self.key_not_found = _gauge("fh_prefork_edge_key_not_found",
                                    "1 while Edge says the API key does not exist")
        self.leader = _gauge("fh_prefork_leader", "1 while this worker holds the leader lease")
        self.role = _gauge("fh_prefork_role", "Leader mode: 1 for this worker's role",
                           ["role"])
        self.features = _gauge("fh_prefork_features", "Features this worker holds")


_lock = threading.Lock()
_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    """This process's metrics, created at the first call (in a worker)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()
        return _metrics


def store_kind(store_url: str | None) -> str:
    """memcache, redis, file or none: the store URL's scheme (never the URL, which may hold
    secrets); the kind configured, whether or not it opened (see store_healthy)."""
    url = store_url or "none"
    if url.startswith("memcache://"):
        return "memcache"
    if url.startswith(("redis://", "rediss://", "redis+")):
        return "redis"
    return "file" if url.startswith("file://") else "none"


class Exporter:
    """Turns one worker's health into metric updates; ``step`` runs on its store thread
    (or the worker's own timer thread when it has no store)."""

    def __init__(self, health: Callable[[], WorkerHealth]) -> None:
        self._health = health           # the worker's health(): no look at the process
        self._seen: dict[str, int] = {}
        self._edge_states: set[str] = set()
        self._steps = 0

    def step(self) -> float:
        m = metrics()
        if self._steps % SWEEP_EVERY == 0:
            sweep_dead()
        self._steps += 1
        health = self._health()
        for name, metric in m.counters.items():
            self._inc(name, metric, health.counters.get(name, 0))
        for source, count in health.applied.items():
            self._inc(f"applied:{source}", m.updates_applied.labels(source=source), count)
        # a leader's Edge connection is new each term
        reconnects = max(0, health.edge_connects - 1)
        self._inc(f"reconnects:{health.edge_terms}", m.edge_reconnects, reconnects)
        from . import __version__

        m.info.labels(version=__version__, store=store_kind(health.store_url),
                      edge_mode=health.edge_mode or "every").set(1)
        if health.last_refresh is not None:
            m.refresh_age.set(max(0.0, time.time() - health.last_refresh))
        m.store_healthy.set(1 if health.store_healthy else 0)
        m.push_connected.set(1 if health.push_connected else 0)
        state = health.edge_state
        m.edge_connected.set(1 if state == "connected" else 0)
        for seen in self._edge_states - {state}:
            m.edge_state.labels(state=seen).set(0)
        m.edge_state.labels(state=state).set(1)
        self._edge_states.add(state)
        m.key_not_found.set(1 if health.key_not_found else 0)
        m.leader.set(1 if health.role == LEADER_ROLE else 0)
        if health.edge_mode == "leader":
            for name in ROLES:
                m.role.labels(role=name).set(1 if health.role == name else 0)
        m.features.set(health.features)
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


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get(
        "prometheus_multiproc_dir") or None


def mark_dead(pid: int) -> None:
    """Drop an exited worker's live gauges (multiprocess mode only). Only deletes files:
    safe in a prefork master (gunicorn's ``child_exit``)."""
    if _multiprocess_dir():
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


_LIVE_FILE = re.compile(r"^gauge_live[a-z]*_(\d+)\.db$")


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:        # someone else's process: alive, as far as we can tell
        return False


def sweep_dead() -> list[int]:
    """Mark dead every worker whose live gauges are still in the multiprocess folder (one
    SIGKILLed, or OOM-killed, where no hook ran); the pids marked dead."""
    folder = _multiprocess_dir()
    if not folder:
        return []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    pids = {int(m.group(1)) for m in map(_LIVE_FILE.match, names) if m}
    dead = sorted(pid for pid in pids if pid != os.getpid() and _dead(pid))
    for pid in dead:
        try:
            _multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
        except OSError:
            pass    # another worker's sweep got there first
    return dead
