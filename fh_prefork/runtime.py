"""One process's FeatureHub: its config, store and Edge connection, and their lifecycle.

A prefork server calls :func:`start_worker` in each worker after the fork and
:func:`stop_worker` at worker exit (the gunicorn and uWSGI adapters do it for
you). Application code calls :func:`config` or :func:`context`, which cost a
module-global read and a pid comparison on top of the plain SDK: no lock, no
I/O.

Fork safety: nothing created before a fork is used after it. A child drops
the parent's objects without touching their sockets (shutting down a shared
socket would cut the parent's connection) and starts fresh, either from the
post-fork hook or, when no hook saw the fork, on first use.

Leader mode (``FH_PREFORK_EDGE_MODE=leader``, see :mod:`fh_prefork.leader`):
every worker opens the store, and the config's EdgeService is an
:class:`~fh_prefork.leader.EdgeSwitch` that only the lease holder (or a
worker that cannot reach the store) switches on. ``status()["role"]`` is then
``leader``, ``follower`` or ``fallback``, and ``status()["lease"]`` names the holder.

A process marked as a prefork *master* never connects to Edge and keeps no
thread: if application code asks for flags while being imported there
(gunicorn ``--preload``, uWSGI without ``lazy-apps``), it gets the store's
contents, read once, and nothing that could leak into the workers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import time
import types
from typing import Any, TypedDict

import psutil
from featurehub_sdk.client_context import ClientContext, ClientEvalFeatureContext
from featurehub_sdk.edge_service import EdgeService
from featurehub_sdk.featurehub_config import FeatureHubConfig

from . import serverlog, status_records
from . import settings as settings_mod
from .edge import EdgeStatus, EdgeView, SupervisedEdge, edge_provider
from .health import WorkerHealth
from .leader import (
    FALLBACK,
    FOLLOWER,
    NEW_LEADER_SECONDS,
    EdgeSwitch,
    Election,
    ElectionStatus,
    Role,
    supports_lease,
)
from .listener import ListeningRepository
from .settings import Settings
from .store import SessionStore, open_store
from .store.core import StoreStatus
from .store.health import check_store_at_start
from .store.lease import LeaseRecord

log = logging.getLogger("fh_prefork")

#: Process roles (``Worker.role``): a prefork master stays dormant, a worker runs everything.
MASTER = "master"
WORKER = "worker"

_overrides: dict[str, Any] = {}
_lock = threading.Lock()
_current: Worker | None = None
_master_pid: int | None = None        # pid of the process marked as a prefork master
_forked_from: int | None = None       # set in a child whose parent had a runtime
_unanswered_fork: int | None = None   # parent pid of a fork no start_worker() answered yet


class NotStartedStatus(TypedDict):
    """``status()`` in a process where fh_prefork has not started (yet)."""

    pid: int
    role: str               # "not started"
    forked_from: int | None


class WorkerStatus(TypedDict):
    """``Worker.status()``: the whole record of one worker, for people, the CLI and tests."""

    pid: int
    role: str               # leader, follower or fallback in leader mode; else process_role
    process_role: str       # worker or master
    lease: LeaseRecord | None
    election: ElectionStatus | None
    master_pid: int | None
    started_at: float
    forked_from: int | None
    store_url: str
    store: StoreStatus | None
    store_error: str | None
    edge_transport: str
    edge_mode: str
    edge: EdgeStatus
    edge_state: EdgeView
    fingerprint: str | None
    last_refresh: float | None
    counters: dict[str, int]
    features: int
    applied: dict[str, int]
    memory_rss: int
    threads: int
    settings: dict[str, Any]


class _NoEdge(EdgeService):  # type: ignore[misc]  # the SDK is untyped
    """Edge stand-in for a master: contexts work, nothing connects."""


class Worker:
    """The config, store and Edge connection of one process, built and closed together."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.pid = os.getpid()
        self.role = role
        self.settings = settings
        self.started_at = time.time()
        self.repository = ListeningRepository()
        # every part close() looks at exists before any can fail to start
        self.switch: EdgeSwitch | None = None
        self.election: Election | None = None
        self.store: SessionStore | None = None
        self.store_error: str | None = None
        self.edge: SupervisedEdge | None = None
        self.publisher: status_records.Publisher | None = None
        self.ticker: status_records.Ticker | None = None
        self.metrics = False
        try:
            self._build(settings, role)
        except BaseException:   # KeyboardInterrupt in a post-fork hook too: stop what started
            self.close(timeout=1.0)
            raise

    def _build(self, settings: Settings, role: str) -> None:
        provider: Any
        make_edge = edge_provider(transport=settings.edge, poll_interval=settings.poll_interval,
                                  backoff_max=settings.edge_backoff_max)
        if role == MASTER:
            provider = lambda repository, api_keys, edge_url: _NoEdge()  # noqa: E731
        elif settings.edge_mode == "leader":
            self.switch = EdgeSwitch(lambda: make_edge(self.repository, [settings.api_key],
                                                       settings.edge_url))
            switch = self.switch
            provider = lambda repository, api_keys, edge_url: switch  # noqa: E731
        else:
            provider = make_edge
        self.config = FeatureHubConfig(settings.edge_url, [settings.api_key],
                                       repository=self.repository, edge_provider=provider)
        try:
            # a master replays once and closes: no thread or connection to be forked
            self.store = open_store(settings.store, self.config, settings.store_options(),
                                    start=role != MASTER)
        except (ValueError, OSError) as err:  # e.g. the store file became foreign-owned
            self.store_error = str(err)
            log.error("fh_prefork: store %s unusable, serving from Edge only: %s",
                      settings.store_display, err)
        # the service every context of this worker talks to (keys are client-evaluated)
        self.edge_service: EdgeService = self.config.get_or_create_edge_service()
        if role == MASTER:
            pass                   # dormant: the store replayed once, nothing connects
        elif self.switch is not None:
            self._elect(self.switch)
        elif isinstance(self.edge_service, SupervisedEdge):
            self.edge = self.edge_service
            self.edge.start()
        if role != MASTER:   # the absence judge counts silence only from a current view
            self.repository.edge_live = self._edge_live
        if role != MASTER:   # on the store thread, or a ticker of their own without a store
            tasks: list[tuple[status_records.Task, str]] = []
            parent = os.getppid()      # the prefork master (or whoever started us)
            if parent > 1:
                self.publisher = status_records.Publisher(self.status, parent)
                tasks.append((self.publisher.step, "status record"))
            if _metrics is not None:
                tasks.append((_metrics.Exporter(self.health).step, "metrics"))
                self.metrics = True
            self.ticker = status_records.run_tasks(self.store, tasks)

    def _elect(self, switch: EdgeSwitch) -> None:
        """Leader mode: run the lease as a store task; the role switches the Edge connection."""
        backend = self.store.backend if self.store is not None else None
        if self.store is None or not supports_lease(backend):
            log.warning("fh_prefork: leader mode needs a shared store (%s); worker %d connects "
                        "to Edge itself",
                        self.store_error or f"store {self.settings.store_display}",
                        self.pid)
            switch.start()
            return

        def on_role(old: Role, new: Role) -> None:  # on the store thread
            if new == FOLLOWER:
                switch.stop()       # at once: a follower must not hear or write anything
            else:
                switch.start()      # leader or fallback; keeps a connection already open

        store = self.store
        refresh = self.settings.refresh_seconds

        def state_problem() -> str | None:  # a follower that cannot get the state falls back
            # an empty store is also a new leader's first moments: its Edge answer (however
            # far), its write, our read a period later. A fallback stays one until the
            # store holds the state: it must not drop a connection still being answered.
            grace = refresh if election.role == FALLBACK else refresh + NEW_LEADER_SECONDS
            return store.state_problem(min_age=refresh, absent_min_age=grace)

        election = Election(backend, ttl=self.settings.lease_seconds,
                            renew_seconds=self.settings.lease_renew_seconds,
                            follow_seconds=refresh, jitter=self.settings.refresh_jitter,
                            on_role=on_role, state_problem=state_problem,
                            edge_state=lambda: switch.status()["state"],
                            write_problem=store.write_problem)
        self.election = election
        self.store.add_task(election.step, on_close=election.release, name="election")

    def _edge_live(self) -> bool:
        """Whether this worker's Edge view is current (see SupervisedEdge.live)."""
        if self.switch is not None:
            return self.switch.live()
        return self.edge is not None and self.edge.live()

    @property
    def edge_role(self) -> Role | None:
        """leader, follower or fallback in leader mode; None otherwise."""
        if self.election is not None:
            return self.election.role
        return FALLBACK if self.switch is not None else None

    def close(self, timeout: float = 2.0) -> None:
        """Edge first (no new updates), then the store (flushes, then releases the lease).

        One deadline for all of it: Edge may take half, the store's flush what
        is left (its thread then gets ``SessionStore.STOP_GRACE`` to finish a
        call in flight, and closes the backend itself if that runs out).
        """
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self.edge is not None:
            self.edge.close(timeout=timeout / 2)
        if self.switch is not None:
            self.switch.close(timeout=min(timeout / 2, left()))
        if self.store is not None:
            self.store.close(flush_timeout=left())
        if self.ticker is not None:
            self.ticker.close(timeout=min(1.0, max(0.2, left())))
        self.repository.close()
        if self.publisher is not None:
            self.publisher.remove()
        if self.metrics and _metrics is not None:
            _metrics.mark_dead(self.pid)

    def edge_status(self) -> EdgeStatus:
        """This worker's Edge connection: the switch's in leader mode, ``none`` without one."""
        if self.switch is not None:
            return self.switch.status()
        return self.edge.status() if self.edge is not None else {"state": "none"}

    def health(self) -> WorkerHealth:
        """The few facts the provider and the metrics watch, without a look at the process."""
        store = self.store.status() if self.store is not None else None
        edge = self.edge_status()
        lease = self.election.status()["lease"] if self.election is not None else None
        push = store["push"] if store is not None else None
        return WorkerHealth(
            pid=self.pid, role=self.edge_role or self.role, edge_mode=self.settings.edge_mode,
            store_url=self.settings.store_display, edge_state=edge["state"],
            edge_error=edge.get("last_error"), edge_connects=edge.get("connects", 0),
            edge_terms=edge.get("terms", 0),
            lease_edge=lease["edge"] if lease is not None else None,
            ready=self.repository.is_ready(),
            store_healthy=store is not None and store["healthy"],
            push_connected=push is not None and push["connected"],
            last_refresh=store["last_refresh"] if store is not None else None,
            features=self.repository.known_features(),
            counters=store["counters"] if store is not None else {},
            applied=dict(self.repository.applied))

    def status(self) -> WorkerStatus:
        proc = psutil.Process(self.pid)
        store = self.store.status() if self.store is not None and self.role != MASTER else None
        edge = self.edge_status()
        election = self.election.status() if self.election is not None else None
        parent = proc.parent()
        return {
            "pid": self.pid,
            "role": self.edge_role or self.role,
            "process_role": self.role,
            "lease": election["lease"] if election else None,
            "election": election,
            "master_pid": parent.pid if parent is not None and self.role == WORKER else None,
            "started_at": self.started_at,
            "forked_from": _forked_from,
            "store_url": self.settings.store_display,
            "store": store,
            "store_error": self.store_error,
            "edge_transport": edge.get("transport", self.settings.edge),   # poll after a 501
            "edge_mode": self.settings.edge_mode,
            "edge": edge,
            "edge_state": edge["state"],
            "fingerprint": store["fingerprint"] if store else None,
            "last_refresh": store["last_refresh"] if store else None,
            "counters": store["counters"] if store else {},
            "features": self.repository.known_features(),
            "applied": dict(self.repository.applied),
            "memory_rss": proc.memory_info().rss,
            "threads": threading.active_count(),
            "settings": self.settings.public(),
        }


def _prometheus_installed() -> bool:
    """True when prometheus_client can be imported; nothing is imported to find out."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):   # hidden by sys.modules[...] = None, or broken
        return False


#: The metrics module when prometheus_client is installed, imported with this module: in a
#: prefork master, before the fork, so no worker pays the (slow) import in its post-fork
#: hook or imports on a background thread (a raw fork during an import deadlocks the child).
_metrics: types.ModuleType | None = None
if _prometheus_installed():
    from . import prometheus as _metrics


def configure(**overrides: Any) -> Settings:
    """Override settings in code (before the fork); validated at once, so errors show early."""
    merged = {**_overrides, **overrides}
    loaded = settings_mod.load(overrides=merged)
    _overrides.clear()
    _overrides.update(merged)
    return loaded


def settings() -> Settings:
    """The settings in force: ``configure()`` overrides over the environment."""
    return settings_mod.load(overrides=_overrides)


def check(settings_: Settings | None = None) -> Settings:
    """Validate settings and the store's location; raise SettingsError naming what is wrong."""
    loaded = settings_ or settings()
    if loaded.store.startswith("file://"):
        from .store.file import ensure_private_directory, parse_file_url

        try:
            ensure_private_directory(parse_file_url(loaded.store))
        except ValueError as err:
            raise settings_mod.SettingsError(f"FH_PREFORK_STORE: {err}") from None
    check_store_at_start(loaded)   # connect, authenticate, scripts, push: one ERROR line if not
    return loaded


def is_master() -> bool:
    """True in a process marked as a prefork master (it never connects or starts threads)."""
    return _master_pid == os.getpid()


def mark_master() -> None:
    """Call in a prefork master: flags asked for here never start threads or connect."""
    global _master_pid
    _master_pid = os.getpid()


def start_worker(hooked: str = "start_worker()") -> Worker:
    """Start this process's FeatureHub now (a post-fork hook). Idempotent per process.

    ``hooked`` names the caller for the log (the adapters pass their hook's name).
    """
    global _current, _unanswered_fork, _check_every
    _reset_if_forked()
    _unanswered_fork = None
    with _lock:
        current = _current
        if current is not None and current.pid == os.getpid() and current.role != MASTER:
            return current
        if current is not None and current.pid == os.getpid():
            current.close(timeout=0)  # the master's dormant config, if this is it
            _current = None
        _current = Worker(settings(), role=WORKER)
        _check_every = PID_CHECK_EVERY
        _log_start(_current, hooked)
        return _current


def stop_worker(timeout: float = 2.0) -> None:
    """Close this process's store, timer and Edge connection (a worker-exit hook)."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None and current.pid == os.getpid():
        current.close(timeout=timeout)


#: ``context()`` calls between two pid checks. A fork that ran the at-fork hooks (``os.fork``,
#: multiprocessing, gunicorn, uWSGI with ``py-call-uwsgi-fork-hooks``) clears the runtime
#: at once; only a raw fork that ran no hook at all (and no post-fork hook of ours) is
#: caught by comparing pids, which costs a system call that can cost more than the flag
#: read itself: so it is made every 64th read. Until then a raw-forked child reads its copy
#: of the parent's flags (memory only, no I/O). A copy of a dormant master's runtime (uWSGI
#: without fork hooks, flags read at import) is checked on every read: it never connects,
#: so its flags would never change.
PID_CHECK_EVERY = 64
_reads = 0
#: PID_CHECK_EVERY, or 1 while the runtime is a dormant master's (checked on every read, so
#: its raw-forked children replace it at once; set where the runtime is made, at no cost here)
_check_every = PID_CHECK_EVERY


def config() -> FeatureHubConfig:
    """This process's started FeatureHubConfig, the same object for the process's life.

    Checks the pid on every call: ``config()`` is called once, not per request.
    """
    current = _current
    if current is not None and current.pid == os.getpid():
        return current.config
    return _start_lazily().config


def worker() -> Worker:
    """This process's worker, started on first use; memory only, as :func:`context`."""
    global _reads
    current = _current
    _reads += 1
    if current is None or (not _reads % _check_every and current.pid != os.getpid()):
        current = _start_lazily()
    return current


def context() -> ClientContext:
    """A new client-evaluated context, as ``config().new_context()`` builds: memory only.

    Built directly from this worker's repository and Edge service, which the
    config would look up on every call. The lines of :func:`worker` are
    written out here: a call more is 3 % of a flag read.
    """
    global _reads
    current = _current
    _reads += 1
    if current is None or (not _reads % _check_every and current.pid != os.getpid()):
        current = _start_lazily()
    return ClientEvalFeatureContext(current.repository, current.edge_service)


def status() -> WorkerStatus | NotStartedStatus:
    """What this process knows: pid, role, store, Edge state, last refresh, counters."""
    current = _current
    if current is None or current.pid != os.getpid():
        return {"pid": os.getpid(), "role": "not started", "forked_from": _forked_from}
    return current.status()


def current_worker() -> Worker | None:
    current = _current
    return current if current is not None and current.pid == os.getpid() else None


def _start_lazily() -> Worker:
    global _current, _unanswered_fork, _check_every
    _reset_if_forked()
    with _lock:
        if _current is not None and _current.pid == os.getpid():
            return _current
        server = prefork_server()
        if server is not None:
            serverlog.route_for(server)   # the hooks that would have done it never ran
        master = _master_pid == os.getpid() or (server is not None and _is_prefork_master(server))
        if master:
            mark_master()
        elif server is not None or _unanswered_fork is not None:
            forked = f" (forked from {_unanswered_fork})" if _unanswered_fork else ""
            log.warning("fh_prefork: worker %d%s reads flags but no %s hook started fh_prefork, "
                        "so it starts late and without the server's lifecycle; %s", os.getpid(),
                        forked, server or "post-fork",
                        _HOOK_LINES.get(server or "", _HOOK_LINES[""]))
        _unanswered_fork = None
        _current = Worker(settings(), role=MASTER if master else WORKER)
        _check_every = 1 if master else PID_CHECK_EVERY
        if not master:
            _log_start(_current, "first flag read")
        return _current


#: The exact lines to add, by server, when a worker started without the hooks.
_HOOK_LINES = {
    "gunicorn": "add to gunicorn.conf.py: from fh_prefork.gunicorn import on_starting, "
                "post_fork, worker_exit (or call fh_prefork.start_worker() from your own "
                "post_fork and fh_prefork.stop_worker() from your worker_exit)",
    "uWSGI": "add to the uWSGI options: import = fh_prefork.uwsgi (--import fh_prefork.uwsgi)",
    "": "call fh_prefork.start_worker() in your server's post-fork hook",
}


def prefork_server() -> str | None:
    """gunicorn or uWSGI when this process belongs to one of them (master or worker)."""
    if "uwsgi" in sys.modules and hasattr(sys.modules["uwsgi"], "worker_id"):
        return "uWSGI"
    if "gunicorn.arbiter" in sys.modules:
        return "gunicorn"
    return None


def _is_prefork_master(server: str) -> bool:
    """True in the server's master: it must never hold connections or threads, hooks or not.

    uWSGI says so (worker id 0). A gunicorn worker is a fork of the arbiter: it
    shares the arbiter's command line (or carries setproctitle's "worker"
    title), while the arbiter's parent is whatever started gunicorn.
    """
    if server == "uWSGI":
        return int(sys.modules["uwsgi"].worker_id()) == 0
    try:
        me = psutil.Process()
        title = " ".join(me.cmdline())
        if "gunicorn: worker" in title:
            return False
        if "gunicorn: master" in title:
            return True
        parent = me.parent()
        return parent is None or parent.cmdline() != me.cmdline()
    except psutil.Error:
        return False


def _log_start(worker: Worker, how: str) -> None:
    cfg = worker.settings
    store = worker.store.status() if worker.store is not None else None
    held = f"{store['features']} feature(s)" if store else worker.store_error
    log.info("fh_prefork: worker %d started by %s: store %s (%s), edge %s, mode %s", worker.pid,
             how, cfg.store_display, held, cfg.edge, cfg.edge_mode)


def _reset_if_forked() -> None:
    """Drop state inherited through a fork that no at-fork hook saw (uWSGI, for one)."""
    current = _current
    if current is not None and current.pid != os.getpid():
        _note_fork()


def _note_fork() -> None:
    """In a child: forget the parent's runtime without touching its threads or sockets."""
    global _current, _lock, _forked_from, _unanswered_fork
    if _current is not None:
        _forked_from = _unanswered_fork = _current.pid
    _current = None
    _lock = threading.Lock()  # the parent may have held it while forking


os.register_at_fork(after_in_child=_note_fork)
