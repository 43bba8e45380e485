"""SessionStore: feature states shared by processes through a backend.

One thread per store does all backend I/O: it writes what arrived from Edge,
heals what the store lost, and runs the jittered refresh timer that replays
what other processes wrote. The Edge thread only marks the store dirty; the
request path never touches the store at all.

Every write and every full read is one *reconciliation* (``reconcile.py``):
the store converges to the newest version of every live feature any process
holds, and only tombstones delete. So an emptied store (restart, flush,
eviction, a deleted file) is refilled by the next process that reads it, a
stale value (a memcached node that comes back, a restored backup, a foreign
writer that overwrote ours) is healed within one verify period, and a
deletion is never resurrected by a process that missed it.

Guarantees, each proven by a multi-process test:

* an update this process received is never dropped: a failed or conflicted
  write stays wanted and is retried until a write holds it;
* only the backend's compare-and-set answer decides who won;
* the data key is the compare-and-set target; a fingerprint that matches the
  data by either formula (sorted, or the Ruby store's array order) is never
  rewritten, and one left stale by a writer that died between its two writes
  is repaired at a full read.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from featurehub_sdk.featurehub_config import FeatureHubConfig

from .. import features as fs
from .. import tombstones as ts
from ..apikey import environment_id, require_client_evaluated
from ..listener import ListeningRepository, RawUpdateFeatureListener
from ..ratelog import RateLimitedLog
from ..threads import launch_without_signals, wait_for_end
from ..verdicts import Verdict
from .backend import (
    ChangeNotifier,
    ItemLimitBackend,
    PushBackend,
    PushStatus,
    Snapshot,
    StoreBackend,
    StoreUnavailable,
    TokenKind,
)
from .failure import classify
from .options import DEFAULT_MAX_ITEM_BYTES, SessionStoreOptions
from .reconcile import Plan, reconcile
from .wake import WakeState, next_wake

log = logging.getLogger("fh_prefork.store")

#: Outcome of one sync: done, retry soon, or blocked until the state changes (too large).
SyncOutcome = Literal["done", "retry", "blocked"]
_DONE: SyncOutcome = "done"
_RETRY: SyncOutcome = "retry"
_BLOCKED: SyncOutcome = "blocked"
#: Seconds a task waits at least between two runs, whatever it asks for.
MIN_TASK_DELAY = 0.01
#: The state problem of a reachable store with no data under its key.
NO_STATE = "the store holds no state yet"


@dataclass
class StoreCounters:
    """Monotonic counters, exposed in ``status()`` and used by the tests' assertions."""

    writes: int = 0            # data writes the backend accepted
    write_attempts: int = 0    # compare-and-set / add requests sent
    cas_conflicts: int = 0     # attempts another writer won
    retries: int = 0           # re-read + re-merge after a conflict
    unchanged: int = 0         # flushes that found the store already held everything
    deferred: int = 0          # flushes put off to the next tick (conflict storm or backend down)
    refreshes: int = 0         # refresh ticks run
    reads: int = 0             # full reads of the data
    replays: int = 0           # batches replayed into the repository
    seeds: int = 0             # writes into an absent data key, from what this process knew
    heals: int = 0             # features written back that the store had lost or held older
    buried: int = 0            # stored features removed because a tombstone covers them
    settles: int = 0           # fingerprint keys rewritten because they matched no formula
    errors: int = 0            # backend failures
    junk: int = 0              # reads that found unusable values or entries in the store
    junk_entries: int = 0      # unusable entries (or whole values) those reads skipped

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class StoreStatus(TypedDict):
    """``SessionStore.status()``: what the store holds and how the backend answers."""

    backend: str
    source: str
    environment_id: str
    fingerprint: str | None
    features: int
    tombstones: int
    state_problem: str | None
    pending: int
    flushing: bool              # a batch is being written right now
    last_refresh: float | None
    last_write: float | None
    last_error: str | None
    healthy: bool
    push: PushStatus | None
    refresh_seconds: float
    max_item_bytes: int         # the write limit in force (the server's own, or the option)
    counters: dict[str, int]
    recent_ticks: list[float]


@dataclass
class _Task:
    """A callable the store thread runs on its own schedule (see ``SessionStore.add_task``)."""

    run: Callable[[], float]
    on_close: Callable[[], object] | None
    due: float          # time.monotonic()
    name: str
    errors: RateLimitedLog   # a task failing every period logs once a minute, not per tick


def attach_repository(config: FeatureHubConfig) -> ListeningRepository:
    """Return the config's ListeningRepository, installing one if it has a plain repository."""
    repo = config.repository()
    if isinstance(repo, ListeningRepository):
        return repo
    if getattr(config, "_edge_service", None) is not None:
        raise ValueError("create the session store before the config connects to Edge "
                         "(before config.init() or config.new_context())")
    listening = ListeningRepository()
    existing = repo.extract_feature_state()
    if existing:
        listening.notify("features", existing, source="existing-repository")
    for interceptor in getattr(repo, "_interceptors", []):
        listening.register_interceptor(interceptor)
    config.repository(listening)
    return listening


class SessionStore(RawUpdateFeatureListener):
    """Shares one environment's feature states between processes through ``backend``."""

    #: seconds ``close()`` waits for the store thread beyond the flush: long enough for a
    #: call in flight to end within the backends' own timeouts, short enough for a worker exit
    STOP_GRACE = 2.0

    def __init__(self, backend: StoreBackend, config: FeatureHubConfig,
                 options: SessionStoreOptions, *, start: bool = True,
                 clock: Callable[[], float] | None = None) -> None:
        """Read and replay the store once; then, with ``start``, share from a thread of its own.

        ``start=False`` is for a prefork master: it replays once and closes at
        once, so no thread or connection exists to be forked. ``clock``, for
        tests (fh_prefork.testing.clock.ManualClock), replaces the clocks the
        state is judged by: the absence grace, tombstone ages and when a
        proposal is confirmed. The thread's own schedule stays on real time.
        """
        api_key = config.get_api_keys()[0]
        require_client_evaluated(api_key)
        self.environment_id = environment_id(api_key)
        self.options = options
        self.source = backend.source
        self._backend = backend
        self._log = options.logger or log
        self._repository = attach_repository(config)
        self._repository.absence_seconds = options.edge_absence_seconds
        self._repository.shared = True
        if clock is not None:
            self._repository.use_clock(clock)
        self.counters = StoreCounters()
        self._cond = threading.Condition()
        self._dirty = False                 # something arrived that the store may lack
        self._dirty_ids: set[str] = set()   # ids Edge changed since the last write
        self._blocked = False               # the state cannot be written until it changes
        self._too_large_fingerprint: str | None = None   # the state that did not fit
        self._write_problem: str | None = None           # why it did not
        self._in_flight = False
        self._in_flight_ids: set[str] = set()   # the batch being written: still pending
        self._closing = False
        self._closed = False
        self._retry_at: float | None = None    # a write failed: the next one not before this
        self._refresh_requested = False
        self._notified = False              # push: the backend says the data changed
        self._notified_full = False         # push: read in full (notifications were lost)
        self._stored_count = 0
        self._tombstone_count = 0
        self._change_token: str | None = None
        self._fingerprint: str | None = None
        self._last_refresh: float | None = None
        self._last_write: float | None = None
        self._last_error: str | None = None
        self._problem: str | None = None       # why the store cannot give us the state
        self._problem_since: float | None = None   # monotonic
        self._ticks_since_read = 0
        self._proposals_due: float | None = None    # unix time a proposal may be confirmed
        self._recent_ticks: deque[float] = deque(maxlen=64)  # monotonic, system-wide on Linux
        self._backend_log = RateLimitedLog(self._log)
        self._write_failing = False     # the failure going on was met writing
        self._size_log = RateLimitedLog(self._log)
        self._junk_log = RateLimitedLog(self._log)
        self._heal_log = RateLimitedLog(self._log)
        self._thread_log = RateLimitedLog(self._log)
        self._tasks: list[_Task] = []
        self._server_item_limit: int | None = None   # what the server said; 0: it does not say
        self._texts_due: tuple[bytes | None, int, tuple[Verdict, ...] | None] | None = None
        self._fingerprint_due: tuple[Snapshot, fs.Decoded] | None = None   # see _start_up
        self._starting = start      # the store thread has not checked the start's read yet
        self._thread_lost = False   # its start failed: nothing will be read or written again
        self._shut = False          # the backend is closed (by the store thread, or by close)

        try:  # read and replay only: a write here would block the post-fork hook
            self._sync(write=False)
            self._note_success()
        except StoreUnavailable as err:
            self._note_failure(err, "cannot read it at start, serving from Edge until it "
                               "returns")
        self._notifier: ChangeNotifier | None = None
        self._push_lock = threading.Lock()     # the notifier starts, or is closed, not both
        self._thread: threading.Thread | None = None
        if not start:
            # no store thread to leave the start's checks to (see _start_up): the fingerprint
            # is checked here, and nothing of the value read is kept by a store that is closed
            self._check_start_fingerprint()
            self._texts_due = None
            self._closing = self._closed = True
            self._backend.close()
            return
        self._repository.register_raw_update_listener(self)
        # made here (status() shows it at once), started by the store thread: a subscription
        # or a watch need not delay the worker's start, and the notifier's first act is a
        # token check that sees any write made between this read and its start
        self._notifier = self._make_notifier() if options.push else None
        self._thread = threading.Thread(target=self._run, name=f"fh-prefork-{self.source}",
                                        daemon=True)
        # last: the launch returns at once, and the thread has nothing of the constructor's
        # left to race (its first acts are the start's deferred checks: see _start_up)
        launch_without_signals(self._thread, failed=self._thread_failed)

    @property
    def edge_live(self) -> Callable[[], bool] | None:
        """() -> whether this process's Edge view is current: the repository's, which its
        absence judge reads (see fh_prefork.absence)."""
        return self._repository.edge_live

    @edge_live.setter
    def edge_live(self, live: Callable[[], bool] | None) -> None:
        self._repository.edge_live = live

    # -- RawUpdateFeatureListener: called on the notifying thread, must only mark ------------

    def process_updates(self, features: list[fs.FeatureState], source: str) -> None:
        if source != self.source and features:
            self._mark_dirty(f.get("id") for f in features)

    def process_update(self, feature: fs.FeatureState, source: str) -> None:
        self.process_updates([feature], source)

    def delete_feature(self, feature: fs.FeatureState, source: str) -> None:
        if source != self.source:
            self._mark_dirty([feature.get("id")])

    def marks_changed(self) -> None:
        self._mark_dirty(())

    def _mark_dirty(self, ids: Any) -> None:
        with self._cond:
            self._dirty = True
            self._blocked = False
            self._dirty_ids.update(i for i in ids if isinstance(i, str))
            self._cond.notify_all()

    def close(self, flush_timeout: float = 1.0) -> None:
        """Flush what is pending (bounded by ``flush_timeout``), stop the thread. Idempotent.

        The store thread owns the backend's client and lock descriptors, so it
        is the thread that runs the closing tasks and closes the backend, as
        its last act: a thread that does not stop in time (a hung server past
        its timeouts) never has its client closed under it. Only the first of
        concurrent calls flushes.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
        if flush_timeout > 0:
            self.flush(flush_timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._push_lock:   # after this, the store thread starts no notifier
            notifier = self._notifier
        if notifier is not None:
            notifier.close()
        self._repository.remove_raw_update_listener(self)
        thread = self._thread
        ended = wait_for_end(thread, max(flush_timeout, 0) + self.STOP_GRACE)
        if ended and thread is not None and thread.ident is None:
            self._shut_down()   # it never ran (its start failed): no store thread will do this
        if not ended:
            self._log.warning("fh_prefork: %s store thread did not stop within %.1f s; it "
                              "closes %s when its current call returns", self.source,
                              max(flush_timeout, 0) + self.STOP_GRACE,
                              self._backend.description)

    def _thread_failed(self) -> None:
        """The store thread could not start (see threads.launch_without_signals): unhealthy
        in ``status()``, since nothing will be read, written or run again; nothing to wait
        for in ``flush()``; and a close that gave up waiting for the launch left the backend
        to it."""
        self._last_error = "the store thread could not start"
        self._set_problem("the store thread could not start: nothing is refreshed or written")
        with self._cond:
            self._thread_lost = True
            closed = self._closed
            self._cond.notify_all()
        if closed:
            self._shut_down()

    def _shut_down(self) -> None:
        """The store thread's last act: closing tasks (lease release), then the backend.
        Once: a close and a thread that failed to start may both come here."""
        with self._cond:
            if self._shut:
                return
            self._shut = True
        for task in self._take_tasks():
            if task.on_close is not None:
                try:
                    task.on_close()
                except Exception:
                    self._log.exception("fh_prefork: %s closing task %s failed", self.source,
                                        task.name)
        self._backend.close()

    # -- tasks: extra backend I/O on the store thread ------------------------------------------

    @property
    def backend(self) -> StoreBackend:
        """The backend; use it only from a task (its clients are not thread-safe)."""
        return self._backend

    def add_task(self, run: Callable[[], float], *, on_close: Callable[[], object] | None = None,
                 name: str = "task") -> None:
        """Run ``run`` on the store thread now, then again after the seconds it returns.

        Lets a feature do backend I/O (the leader lease) on the one thread that
        owns the backend's client, without a second connection or thread.
        ``on_close`` runs once on the store thread as it stops (after
        ``close()``), before the backend closes.
        An exception in ``run`` is logged and retried after one refresh period.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._tasks.append(_Task(run, on_close, time.monotonic(), name,
                                     RateLimitedLog(self._log)))
            self._cond.notify_all()

    def _take_tasks(self) -> list[_Task]:
        with self._cond:
            tasks, self._tasks = self._tasks, []
        return tasks

    def _next_task_due(self) -> float | None:
        return min((t.due for t in self._tasks), default=None)

    def _run_due_tasks(self) -> None:
        with self._cond:
            due = [t for t in self._tasks if t.due <= time.monotonic()]
        for task in due:
            try:
                delay = float(task.run())
                task.errors.recovered("fh_prefork: %s store task %s works again", self.source,
                                      task.name)
            except Exception:
                self.counters.errors += 1
                task.errors.failure("fh_prefork: %s store task %s failed", self.source,
                                    task.name, level=logging.ERROR, exc_info=True)
                delay = self._period()
            # a floor, so a task answering 0 again and again cannot spin the thread
            task.due = time.monotonic() + max(MIN_TASK_DELAY, delay)

    # -- public helpers ---------------------------------------------------------------------

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until what arrived has been written (or found already stored)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while ((self._starting or self._dirty or self._in_flight) and not self._closed
                   and not self._thread_lost):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return not (self._dirty or self._blocked or self._thread_lost)

    def state_problem(self, min_age: float = 0.0, absent_min_age: float | None = None
                      ) -> str | None:
        """Why this process cannot get the state from the store, once it has lasted ``min_age`` s.

        Absent data, a value no form of which can be read, a state over the
        item limit, an unreachable store: a leader-mode follower in that state
        needs its own Edge connection. Absent data is also what a store looks
        like while a new leader fills it, so it may be given longer
        (``absent_min_age``).
        """
        with self._cond:
            problem, since = self._problem, self._problem_since
        if problem == NO_STATE and absent_min_age is not None:
            min_age = absent_min_age
        if problem is None or since is None or time.monotonic() - since < min_age:
            return None
        return problem

    def write_problem(self) -> str | None:
        """Why the state this process holds cannot be written (over the item limit), if so.

        A leader puts it in its lease: its followers cannot see it in the store,
        which still holds an older state that fitted.
        """
        return self._write_problem

    def refresh(self, timeout: float = 2.0) -> bool:
        """Ask the store thread for a full read now; wait until it ran."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self.counters.reads + 1
            self._refresh_requested = True
            self._cond.notify_all()
            while self.counters.reads < target and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self.counters.reads >= target

    def status(self) -> StoreStatus:
        with self._cond:
            # a batch being written is not in the store yet: it counts as pending
            pending = (len(self._dirty_ids | self._in_flight_ids)
                       or int(self._dirty or self._in_flight))
            flushing = self._in_flight
            problem = self._problem
        notifier = self._notifier   # read once: the store thread drops one that fails to start
        return {
            "backend": self._backend.description,
            "source": self.source,
            "environment_id": self.environment_id,
            "fingerprint": self._fingerprint,
            "features": self._stored_count,
            "tombstones": self._tombstone_count,
            "state_problem": problem,
            "pending": pending,
            "flushing": flushing,      # a batch is being written right now
            "last_refresh": self._last_refresh,
            "last_write": self._last_write,
            "last_error": self._last_error,
            "healthy": not self._backend_log.failing and not self._thread_lost,
            "push": notifier.status() if notifier is not None else None,
            "refresh_seconds": self.options.refresh_timeout,
            # the largest state written: the option, or the server's own limit once known
            "max_item_bytes": (self.options.max_item_bytes or self._server_item_limit
                               or DEFAULT_MAX_ITEM_BYTES),
            "counters": self.counters.as_dict(),
            "recent_ticks": list(self._recent_ticks),
        }

    # -- the store thread -------------------------------------------------------------------

    def _run(self) -> None:
        self._start_up()
        next_tick = time.monotonic() + random.uniform(0, self.options.refresh_timeout)
        while True:
            with self._cond:
                # bounded: each pass either breaks (something runnable) or waits until a
                # deadline strictly in the future (next_wake never returns one in the past)
                while True:
                    now = time.monotonic()
                    wake = next_wake(self._wake_state(next_tick), now)
                    if wake is None:
                        break
                    self._cond.wait(wake - now)
                closed = self._closed
            if closed:   # outside the lock: status() never waits on the lease release or close
                self._shut_down()
                return
            try:
                self._run_due_tasks()  # first: a leader that lost its lease stops before writing
                now = time.monotonic()
                if self._flush_due(now):
                    self._flush()
                if self._refresh_requested or self._notified or now >= next_tick:
                    with self._cond:
                        full = self._refresh_requested or self._notified_full
                        self._refresh_requested = False
                        self._notified = self._notified_full = False
                    if now >= next_tick:
                        next_tick = now + self._period()
                    self._tick(full)
                self._thread_log.recovered("fh_prefork: %s store thread works again",
                                           self.source)
            except Exception:  # the thread must outlive any bug or junk
                self.counters.errors += 1
                self._thread_log.failure("fh_prefork: %s store thread error", self.source,
                                         level=logging.ERROR, exc_info=True)
                with self._cond:
                    self._retry_at = time.monotonic() + self._period() / 4
            finally:
                with self._cond:
                    self._cond.notify_all()

    def _wake_state(self, next_tick: float) -> WakeState:
        """What ``next_wake`` decides from; called with ``self._cond`` held."""
        return WakeState(closed=self._closed, dirty=self._dirty, retry_at=self._retry_at,
                         next_tick=next_tick, task_due=self._next_task_due(),
                         notified=self._notified, refresh_requested=self._refresh_requested)

    def _flush_due(self, now: float) -> bool:
        """Dirty, and no failed write's retry time still ahead: what ``next_wake`` runs for."""
        with self._cond:
            return self._dirty and (self._retry_at is None or now >= self._retry_at)

    def _start_up(self) -> None:
        """The store thread's first acts, kept out of the constructor: check the start
        value's fingerprint, start push, ask the server its item limit (for ``status()``; a
        write would ask it anyway), and remember the start value's entries by text."""
        texts, self._texts_due = self._texts_due, None      # taken whatever happens
        fingerprint = None      # the start value's, once the check has worked it out
        try:
            fingerprint = self._check_start_fingerprint()
        except Exception:  # the loop still runs: its verify read checks the fingerprint again
            self._start_failed()
        finally:
            with self._cond:
                self._starting = False      # flush() waits for the check (it may find a repair)
                self._cond.notify_all()
        try:
            self._start_notifier()
            if not self._closed:    # a store closed at once asks its server nothing
                self._max_item_bytes()
            if texts is not None:
                # the start's value was parsed whole (the worker's start is a third quicker):
                # remember it and its entries by text now, even when closing (no I/O: what
                # was judged stays judged for the next store in the process), so the next
                # value, which differs in a few entries, is judged only there
                fs.remember_entry_texts(*texts, fingerprint=fingerprint)
        except Exception:  # the loop still runs: push is an optimisation, the limit asked later
            self._start_failed()

    def _check_start_fingerprint(self) -> str | None:
        """The stored fingerprint check the start's read left (see _settled), once; the start
        value's fingerprint when it ran."""
        check, self._fingerprint_due = self._fingerprint_due, None
        if check is None or self._closed:
            return None
        self._check_fingerprint(*check, may_write=False)
        return self._fingerprint

    def _start_failed(self) -> None:
        self.counters.errors += 1
        self._thread_log.failure("fh_prefork: %s store thread error at start", self.source,
                                 level=logging.ERROR, exc_info=True)

    def _make_notifier(self) -> ChangeNotifier | None:
        """Push: the backend's notifier, if it has one, to wake this store's thread."""
        if not isinstance(self._backend, PushBackend):
            return None
        try:
            return self._backend.notifier(self._on_notify)
        except Exception as err:  # push is an optimisation: the refresh timer still runs
            self._log.warning("fh_prefork: no change notifications from %s, polling only: %s",
                              self._backend.description, err)
            return None

    def _start_notifier(self) -> None:
        """Start the notifier (on the store thread), unless the store is closing already."""
        with self._push_lock:
            notifier = self._notifier
            if notifier is None or self._closed:
                return
            try:
                notifier.start()
            except Exception as err:  # push is an optimisation: the refresh timer still runs
                self._notifier = None
                self._log.warning("fh_prefork: no change notifications from %s, polling only: "
                                  "%s", self._backend.description, err)

    def _on_notify(self, full: bool) -> None:
        """Called on the notifier's thread: only marks; the store thread does the I/O."""
        with self._cond:
            self._notified = True
            self._notified_full = self._notified_full or full
            self._cond.notify_all()

    def _period(self) -> float:
        j = self.options.refresh_jitter
        return self.options.refresh_timeout * random.uniform(1 - j, 1 + j)

    def _tick(self, full: bool) -> None:
        """One refresh: a cheap token read, and a full sync only when something changed."""
        full = full or self._confirm_due()
        self.counters.refreshes += 1
        self._recent_ticks.append(time.monotonic())
        self._ticks_since_read += 1
        try:
            if not full and self._ticks_since_read < self.options.verify_every:
                token = self._backend.change_token()
                # an absent store is re-read every tick, unless our own state is what cannot
                # be written there (too large): that waits for a change or the verify tick
                if token == self._change_token and (token is not None or self._blocked):
                    self._last_refresh = time.time()
                    self._note_success()
                    return
        except StoreUnavailable as err:
            self._note_failure(err, "refresh skipped")
            return
        self._flush()

    def _flush(self) -> bool:
        """One sync that may write. True when done, False to retry soon (nothing is lost)."""
        with self._cond:
            dirty_ids, self._dirty_ids = self._dirty_ids, set()
            self._dirty = False
            self._in_flight, self._in_flight_ids = True, dirty_ids
        outcome = _RETRY
        try:
            outcome = self._sync(write=True, dirty_ids=dirty_ids)
            # every way out of a sync without StoreUnavailable had the backend answer: an
            # absent or over-sized state, a blocked write or a lost race are not outages
            self._note_success(wrote=True)
        except StoreUnavailable as err:
            self._note_failure(err, f"{len(dirty_ids)} update(s) kept for later", writing=True)
        finally:
            with self._cond:
                if outcome == _RETRY:
                    self._dirty = True
                    self._dirty_ids |= dirty_ids
                # whichever path flushed (the loop's retry or the refresh tick's own sync),
                # its outcome alone sets the retry time: a success clears it
                self._retry_at = (time.monotonic() + self._period() / 4 if outcome == _RETRY
                                  else None)
                self._blocked = outcome == _BLOCKED and not self._dirty
                self._in_flight, self._in_flight_ids = False, set()
                self._cond.notify_all()
        return outcome != _RETRY

    def _sync(self, write: bool, dirty_ids: set[str] | None = None) -> SyncOutcome:
        """Read, reconcile with what this process knows, replay; write if the store must change.

        ``write=False`` (at start) only replays and marks the store dirty when
        it needs a write, which the store thread then makes.
        """
        dirty_ids = dirty_ids or set()
        for attempt in range(self.options.retry_update_count):
            if attempt and self._closed:
                return _RETRY    # closing and the flush's time is up: stop racing, exit
            if attempt:
                self.counters.retries += 1
                base = self.options.backoff_timeout / 1000.0
                time.sleep(random.uniform(0, base * (2 ** min(attempt - 1, 3))))
            snapshot = self._backend.read()
            self.counters.reads += 1
            self._ticks_since_read = 0
            # at start (write=False, in the post-fork hook) the value is parsed whole: the store
            # thread remembers its entries' texts afterwards (see _start_up)
            decoded = self._decode(snapshot, entry_texts=write)
            stored_tombs, bad_tombs = ts.decode(snapshot.tombstones, fs.MAX_READ_BYTES)
            self._judge_by_edge(decoded, stored_tombs)
            plan = reconcile(decoded, snapshot.value is not None, stored_tombs,
                             self._held(), self._repository.shared_tombstones(),
                             now=self._repository.now(),
                             keep_seconds=self.options.tombstone_seconds,
                             max_tombstones=self.options.max_tombstones,
                             knows_state=self._repository.is_ready(),
                             named_at=self._repository.named_at())
            self._apply(plan)
            self._last_refresh = time.time()
            if not plan.write and not bad_tombs:
                self._settled(snapshot, decoded, plan, may_write=write)
                if dirty_ids:
                    self.counters.unchanged += 1
                return _DONE
            if not write:
                self._mark_dirty(())
                self._read_only(snapshot, decoded, plan)
                return _DONE
            fingerprint = fs.fingerprint(plan.live.values())
            if fingerprint == self._too_large_fingerprint:
                return _BLOCKED     # the same state did not fit last time: wait for a change
            payload = fs.encode(plan.live.values())
            if len(payload) > self._max_item_bytes():
                self._too_large_fingerprint = fingerprint
                return self._too_large(len(payload), snapshot)
            tombs = (ts.encode(plan.tombstones.values())
                     if plan.tombstones_changed or bad_tombs else None)
            self.counters.write_attempts += 1
            token = self._backend.write(payload, fingerprint, snapshot, tombs)
            if token is not None:
                self._written(snapshot, plan, token, fingerprint, dirty_ids)
                return _DONE
            self.counters.cas_conflicts += 1
        self.counters.deferred += 1
        self._log.warning("fh_prefork: %d compare-and-set conflicts in a row on %s; "
                          "retrying on the next tick", self.options.retry_update_count,
                          self._backend.description)
        return _RETRY

    def _judge_by_edge(self, stored: fs.Decoded, stored_tombs: ts.Tombstones) -> None:
        """Let the absence judge see what the store holds as well as what this process holds.

        A delete that reached no stream (every connection was down, or in
        leader mode the leader was being replaced) is visible only as absence
        from Edge's view; a process that does not hold the feature cannot
        judge it from its own repository, so the others would keep writing it
        back. The rules (and why an absence never refuses Edge) are in
        :mod:`fh_prefork.absence`.
        """
        self._repository.judge_absent(stored.placed)     # a copy of its own
        self._repository.confirm_marks(stored_tombs, self.confirm_seconds())

    def _confirm_due(self) -> bool:
        """A proposed absence mark in the store has stood its time: read in full to judge it."""
        due = self._proposals_due
        return due is not None and self._repository.now() >= due

    def _note_proposals(self, tombs: ts.Tombstones) -> None:
        proposed = [t.deleted_at for t in tombs.values() if t.proposed]
        self._proposals_due = min(proposed) + self.confirm_seconds() if proposed else None

    def confirm_seconds(self) -> float:
        """How long a proposed absence mark stands in the store before it is confirmed: three
        refresh periods at their longest, so every process whose Edge view still names the
        feature has read the proposal (its write changed the store's token) and lifted it."""
        return 3 * self.options.refresh_timeout * (1 + self.options.refresh_jitter)

    def _held(self) -> list[fs.FeatureState]:
        return [f for f in self._repository.feature_states() if fs.identity_problem(f) is None]

    def _apply(self, plan: Plan) -> None:
        """Tell the repository what the store knows: tombstones first, then newer states."""
        self._note_proposals(plan.tombstones)
        self._repository.apply_shared(plan.replay, plan.tombstones, source=self.source,
                                      keep_seconds=self.options.tombstone_seconds,
                                      max_tombstones=self.options.max_tombstones)
        if plan.replay or plan.deletes:
            self.counters.replays += 1
        self._tombstone_count = len(plan.tombstones)

    def _settled(self, snapshot: Snapshot, decoded: fs.Decoded, plan: Plan,
                 may_write: bool) -> None:
        """The store already holds the truth; make sure its fingerprint agrees with it.

        At start (``may_write`` false, in the post-fork hook) a repair is left
        to the store thread: the hook must not wait on a second read and a write.
        """
        self._stored_count = len(plan.live)
        self._repository.shared_written(plan.tombstones)
        if snapshot.value is not None and not decoded.too_large:
            self._too_large_fingerprint = self._write_problem = None   # the store holds it
        if snapshot.value is None:
            self._change_token = snapshot.change_token
            self._fingerprint = None
            self._set_problem(NO_STATE)
            return
        if decoded.too_large:
            self._change_token = None
            self._set_problem(f"the stored state is unreadable here: {decoded.problem}")
            return
        self._change_token = snapshot.change_token
        if may_write:
            self._check_fingerprint(snapshot, decoded, may_write=True)
        else:
            # at start the store thread checks it, first thing (see _start_up): the
            # fingerprint of a value this process never read is a tenth of a worker's start
            self._fingerprint_due = (snapshot, decoded)
        self._set_problem(None)     # after a repair: one that raised leaves the problem's age

    def _check_fingerprint(self, snapshot: Snapshot, decoded: fs.Decoded,
                           may_write: bool) -> None:
        """The stored value is what the store should hold (no write was planned): make sure
        the stored fingerprint agrees with it. Its fingerprint is worked out once per
        distinct value (see fh_prefork.verdicts)."""
        fingerprint = decoded.fingerprint()
        self._fingerprint = fingerprint
        fingerprint_tokens = (not isinstance(self._backend, TokenKind)
                              or self._backend.fingerprint_tokens)
        if fingerprint_tokens and not decoded.agrees_with(snapshot.change_token):
            if may_write:
                self._change_token = self._settle(snapshot, fingerprint)
            else:
                self._change_token = None   # the store thread's next sync repairs it
                self._mark_dirty(())

    def _settle(self, snapshot: Snapshot, fingerprint: str) -> str | None:
        """Repair a fingerprint that matches the data by no formula, unless a writer is mid-write.

        The Ruby store sets the fingerprint before the data: a fingerprint
        that disagrees for a moment may be its write in progress. Only one
        that still disagrees, unchanged, a moment later is stale.
        """
        time.sleep(0.05)
        again = self._backend.read()
        if again.value != snapshot.value or again.change_token != snapshot.change_token:
            return None     # it moved: a writer is at work; the next tick reads it
        self.counters.settles += 1
        return self._backend.settle(snapshot, fingerprint)

    def _read_only(self, snapshot: Snapshot, decoded: fs.Decoded, plan: Plan) -> None:
        self._stored_count = len(decoded.placed)
        self._change_token = None     # a write is wanted: the next tick syncs in full
        if snapshot.value is None:
            self._set_problem(NO_STATE)

    def _written(self, snapshot: Snapshot, plan: Plan, token: str, fingerprint: str,
                 dirty_ids: set[str]) -> None:
        self.counters.writes += 1
        self._too_large_fingerprint = self._write_problem = None
        self._last_write = time.time()
        self._change_token = token
        self._fingerprint = fingerprint
        self._stored_count = len(plan.live)
        self._repository.shared_written(plan.tombstones)
        self.counters.buried += len(plan.buried)
        healed = [fid for fid in plan.restored if fid not in dirty_ids]
        self.counters.heals += len(healed)
        if snapshot.value is None:
            self.counters.seeds += 1
            self._log.info("fh_prefork: %s held no state; wrote the %d feature(s) this process "
                           "holds", self._backend.description, len(plan.live))
        elif healed:
            self._heal_log.failure("fh_prefork: %s had lost or held older %d feature(s) this "
                                   "process holds; wrote them back", self._backend.description,
                                   len(healed), level=logging.INFO)
        self._set_problem(None)
        self._size_log.recovered("fh_prefork: the state fits %s again",
                                 self._backend.description)

    def _too_large(self, size: int, snapshot: Snapshot) -> SyncOutcome:
        self.counters.errors += 1
        self.counters.deferred += 1
        self._last_error = f"merged state of {size} bytes exceeds the item limit"
        self._write_problem = (f"the state ({size} bytes) is over the store's "
                               f"{self._max_item_bytes()}-byte item limit")
        self._set_problem(self._write_problem)
        self._size_log.failure(
            "fh_prefork: merged feature state is %d bytes, over the %d-byte item limit "
            "of %s; serving from memory, retrying when the state changes",
            size, self._max_item_bytes(), self._backend.description, level=logging.ERROR)
        return _BLOCKED

    def _max_item_bytes(self) -> int:
        """The largest state written: the option if set, else the server's own limit.

        The server is asked on the thread doing backend I/O until it answers
        once: the store thread as it starts (or the read at open, when the value
        read is one only the server's limit can bound); never on a request.
        """
        if self.options.max_item_bytes is not None:
            return self.options.max_item_bytes
        if self._server_item_limit is None:
            if not isinstance(self._backend, ItemLimitBackend):
                self._server_item_limit = 0
            else:
                try:
                    self._server_item_limit = int(self._backend.item_limit() or 0)
                except StoreUnavailable:
                    return DEFAULT_MAX_ITEM_BYTES     # unreachable: asked again next time
                if self._server_item_limit not in (0, DEFAULT_MAX_ITEM_BYTES):
                    # status()["max_item_bytes"] shows it; one line per worker is noise
                    self._log.debug("fh_prefork: %s stores items up to %d bytes (its own "
                                    "limit); writing states up to that size",
                                    self._backend.description, self._server_item_limit)
        return self._server_item_limit or DEFAULT_MAX_ITEM_BYTES

    def _set_problem(self, problem: str | None) -> None:
        with self._cond:
            if problem is None:
                self._problem = self._problem_since = None
            elif self._problem is None:
                self._problem, self._problem_since = problem, time.monotonic()
            else:
                self._problem = problem

    def _decode(self, snapshot: Snapshot, entry_texts: bool = True) -> fs.Decoded:
        raw = snapshot.value
        bound = fs.MAX_READ_BYTES
        if raw is not None and (len(raw) > bound or fs.is_zlib(raw)):
            # only a value past our bound, or one that inflates, can need the server's own
            # larger limit: any other read does not wait on asking the server for it
            bound = max(self._max_item_bytes(), bound)
        decoded = fs.decode(raw, bound, entry_texts=entry_texts)
        if not entry_texts:
            self._texts_due = (raw, bound, decoded.verdicts)
        if decoded.problem or decoded.problems:
            self.counters.junk += 1
            self.counters.junk_entries += len(decoded.problems) or 1
            what = decoded.problem or "; ".join(decoded.problems[:3])
            more = len(decoded.problems) - 3
            if more > 0:
                what += f" (and {more} more)"
            self._junk_log.failure("fh_prefork: unusable data in %s: %s; never replayed",
                                   self._backend.description, what)
        return decoded

    def _note_failure(self, err: StoreUnavailable, consequence: str,
                      writing: bool = False) -> None:
        """Say what failed in words (unreachable, refused, forbidden, full), at a bounded rate.

        A failure met while writing (a full disk, an out-of-memory server) ends
        only with a write that works: the reads that still work in between do
        not announce a recovery, or every write attempt would log anew.
        """
        failure = classify(err)
        self.counters.errors += 1
        self._last_error = f"{failure.words}: {err}"
        self._set_problem(f"the store {failure.phrase}: {err}")
        self._write_failing = self._write_failing or writing
        self._backend_log.failure("fh_prefork: %s %s; %s: %s", self._backend.description,
                                  failure.phrase, consequence, err, kind=failure.kind)

    def _note_success(self, wrote: bool = False) -> None:
        """The backend answered: ``status()["healthy"]`` and the "is back" line follow it."""
        if self._write_failing and not wrote:
            return      # reads work, writes may not: only a write tells
        self._write_failing = False
        self._backend_log.recovered("fh_prefork: %s is back", self._backend.description)
