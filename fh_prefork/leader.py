"""Leader mode: one Edge connection per store instead of one per worker.

With ``FH_PREFORK_EDGE_MODE=leader`` every worker opens the shared store, but
only the holder of the store's *leader lease* connects to Edge and writes what
it hears; every other worker follows the store through its refresh timer.

* :class:`Election` runs the lease: followers try to take it every follow
  period, the leader renews it every renew period, and a role change is
  reported once through ``on_role`` (and logged once).
* :class:`EdgeSwitch` is the config's EdgeService in leader mode. Its
  ``poll()`` never connects, so application code calling
  ``config.new_context().build()`` in a follower opens nothing; the election
  starts a fresh :class:`~fh_prefork.edge.SupervisedEdge` behind it for each
  leadership term (a closed one cannot restart) and closes it when the term ends.

Nothing here knows about servers: the runtime wires the two together.

Why the election runs as a store task, not on its own connection: a lease
operation is one or two round trips every renew period, and the store
already owns a thread whose client is not thread-safe. Running the lease on
that thread (``SessionStore.add_task``) keeps one connection and one thread per
worker, and orders lease and data I/O: the task runs before each flush, so a
leader that finds it lost the lease stops its Edge before writing anything
more. The cost is that a slow flush delays a renewal; flushes are bounded by
the client timeouts, and the lease's local validity window assumes nothing
about renewal punctuality: a leader that could not renew in time steps down.

Failure model:

* graceful exit: ``release()`` (the store's closing hook) marks the lease
  released if it is still ours; a follower takes over at its next attempt (one
  follow period);
* SIGKILL: the lease expires in memcached and Redis after its time to live (the
  file lock dies with the process at once); a follower takes it at its next
  attempt once it is vacant and its holder's time to live has run out;
* vanished lease (the key evicted, the store restarted empty, the lease file
  deleted): the lease is still its holder's. The holder's next renewal takes
  it back (and keeps its Edge connection), while every follower that saw a
  holder leaves the vacant lease alone until that holder's time to live, counted
  from when the follower first saw its last renewal (each renewal stamps a new
  expiry in the record), has run out. A worker that never saw a
  holder (one just started) takes a vacant lease at once;
* lost lease (a pause longer than the time to live, after which a follower took
  it): the renewal finds another holder; the leader closes its Edge at once
  and follows. Until then two leaders may overlap for at most one time to
  live, and their writes still merge by version through the store's compare-and-set;
* store unreachable: a follower falls back to its own Edge connection after
  ``fallback_after`` failed attempts in a row (role ``fallback``); a leader
  does so once its lease's validity window has passed. The next successful
  lease operation makes it leader or follower again;
* store reachable but without a usable state (``state_problem``: the data is
  unreadable for longer than a refresh period, or absent for longer than a
  refresh period plus ``NEW_LEADER_SECONDS``, the time a new leader may need
  to fill an empty store): a follower falls back too, since following would
  serve nothing, and follows again once the store holds the state;
* a leader whose state is over the item limit cannot write it, and its
  followers would serve the older state the store holds: the leader says so
  in its lease, and they fall back until a renewal says the state fits again.
  ``status()["fallback_reason"]`` says why.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final, Literal, TypedDict, TypeGuard

from featurehub_sdk.edge_service import EdgeService

from .edge import EdgeStatus, SupervisedEdge
from .store.backend import StoreUnavailable
from .store.lease import Lease, LeaseAnswer, LeaseBackend, LeaseRecord

log = logging.getLogger("fh_prefork.leader")

__all__ = ["FALLBACK", "FOLLOWER", "LEADER", "EdgeSwitch", "Election", "ElectionStatus",
           "Role", "supports_lease"]

#: A worker's part in leader mode: it holds the lease, follows the store, or (the store
#: unusable) connects to Edge itself.
Role = Literal["leader", "follower", "fallback"]
LEADER: Final = "leader"
FOLLOWER: Final = "follower"
FALLBACK: Final = "fallback"

#: Seconds, beyond one refresh period, a follower gives a new leader to fill an empty store
#: before opening its own Edge connection: time for an Edge answer from far away.
NEW_LEADER_SECONDS = 2.0


def supports_lease(backend: object) -> TypeGuard[LeaseBackend]:
    """True when ``backend`` implements the lease operations of :class:`LeaseBackend`."""
    return isinstance(backend, LeaseBackend)


class ElectionStatus(TypedDict):
    """``Election.status()``: this worker's role and the lease as it last saw it."""

    role: Role
    lease: LeaseRecord | None
    holder: str
    lease_ttl: float
    renew_seconds: float
    follow_seconds: float
    lease_valid_for: float | None
    since: float
    terms: int
    role_changes: int
    lease_retaken: int
    failures: int
    fallback_reason: str | None
    last_error: str | None


class Election:
    """The leader lease of one worker. ``step()`` and ``release()`` run on the store thread."""

    def __init__(self, backend: LeaseBackend, *, ttl: float, renew_seconds: float | None = None,
                 follow_seconds: float = 1.0, jitter: float = 0.2, fallback_after: int = 2,
                 on_role: Callable[[Role, Role], None] | None = None,
                 state_problem: Callable[[], str | None] | None = None,
                 edge_state: Callable[[], str | None] | None = None,
                 write_problem: Callable[[], str | None] | None = None,
                 host: str | None = None, pid: int | None = None,
                 logger: logging.Logger | None = None) -> None:
        if not ttl > 0 or not math.isfinite(ttl):
            raise ValueError(f"lease ttl must be a number of seconds > 0, got {ttl!r}")
        renew = ttl / 3 if renew_seconds is None else renew_seconds
        if not 0 < renew < ttl:
            raise ValueError(f"lease renewal period must be > 0 and < the ttl ({ttl} s), "
                             f"got {renew!r}")
        if not follow_seconds > 0:
            raise ValueError(f"follow period must be > 0, got {follow_seconds!r}")
        self._backend = backend
        self.ttl = float(ttl)
        self.renew_seconds = float(renew)
        self.follow_seconds = float(follow_seconds)
        self._jitter = jitter
        self._fallback_after = max(1, fallback_after)
        self._on_role = on_role
        self._state_problem = state_problem or (lambda: None)
        self._edge_state = edge_state or (lambda: None)
        self._write_problem = write_problem or (lambda: None)
        self.fallback_reason: str | None = None
        self._log = logger or log
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.holder = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self._lock = threading.Lock()     # guards what status() reads from other threads
        self.role: Role = FOLLOWER
        self._announced = False
        self._mine: Lease | None = None         # our lease while we lead
        self._current: Lease | None = None      # the lease as last seen in the backend
        self._valid_until = 0.0                 # monotonic: our lease surely ours until then
        self._failures = 0
        self._last_error: str | None = None
        self._since = time.time()
        self.terms = 0                          # leadership terms begun
        self.changes = 0                        # role changes
        self.retaken = 0                        # vanished leases taken back while leading
        self._released = False
        # the last other holder seen renew, and (monotonic) when its time to live surely ran
        # out if it has not renewed since: until then a vacant lease is left to it
        self._seen_holder: str | None = None
        self._seen_record: Lease | None = None  # its record as last seen renewed
        self._seen_until = 0.0
        self._vacant_noted = False              # logged that we leave a vacant lease alone
        try:   # a backend written before vacant leases were left alone takes them at once
            params = inspect.signature(backend.lease_acquire).parameters
            self._leaves_vacant = "vacant" in params
        except (TypeError, ValueError):
            self._leaves_vacant = False

    # -- the store task -----------------------------------------------------------------------

    def step(self) -> float:
        """One election round; returns the seconds until the next one."""
        if self._released:
            return 3600.0
        started = time.monotonic()
        try:
            if self.role == LEADER and self._mine is not None:
                answer = self._backend.lease_renew(
                    replace(self._mine, edge=self._edge_state(), store=self._write_problem()),
                    self.ttl)
            elif self._leaves_vacant:
                answer = self._backend.lease_acquire(self._candidate(), self.ttl,
                                                     vacant=self._may_take_vacant(started))
            else:
                answer = self._backend.lease_acquire(self._candidate(), self.ttl)
        except StoreUnavailable as err:
            return self._unreachable(err)
        self._failures = 0
        self._last_error = None
        self._remember(answer)
        return self._apply(answer, started)

    def _may_take_vacant(self, now: float) -> bool:
        """Whether a vacant lease is ours to take: no holder seen, or its time has run out."""
        return self._seen_holder is None or now >= self._seen_until

    def _remember(self, answer: LeaseAnswer) -> None:
        """Note the holder the backend named, and until when its lease may live unseen."""
        current = answer.current
        if answer.held:
            self._seen_holder = self._seen_record = None
        elif current is not None and current.holder != self.holder:
            if current != self._seen_record:
                # a renewal (each stamps a new expiry) seen for the first time: the lease
                # it made runs out a time to live after it, so before now + ttl at the latest
                self._seen_record = current
                self._seen_holder = current.holder
                self._seen_until = time.monotonic() + self.ttl
            self._vacant_noted = False
        elif current is None and self._seen_holder is not None and not self._vacant_noted:
            self._vacant_noted = True
            self._log.info("fh_prefork: worker %d found the leader lease vacant (expired, "
                           "evicted, or the store restarted empty); leaves it to its last "
                           "holder %s for up to %.1f s", self.pid,
                           self._describe(self._seen_record),
                           max(0.0, self._seen_until - time.monotonic()))

    def _apply(self, answer: LeaseAnswer, started: float) -> float:
        with self._lock:
            self._current = answer.current
        if answer.held:
            with self._lock:
                self._mine = answer.current
                self._valid_until = started + answer.valid_for
            if self.role != LEADER:
                self.terms += 1
                self._become(LEADER, "is now the leader (lease ttl %g s)", self.ttl)
            elif not self._announced:
                self._become(LEADER, "is now the leader (lease ttl %g s)", self.ttl)
            elif answer.retaken:
                self.retaken += 1
                self._log.warning("fh_prefork: worker %d took back the leader lease, which had "
                                  "vanished from the store (evicted, or the store restarted "
                                  "empty); it stays the leader and keeps its Edge connection",
                                  self.pid)
            return self._spread(self.renew_seconds)
        with self._lock:
            self._mine = None
        leader = self._describe(answer.current)
        problem = self._state_problem()
        if problem is None and answer.current is not None and answer.current.store:
            # the store holds an older state that fitted; the leader's newer one does not
            problem = f"the leader cannot write the state: {answer.current.store}"
        if problem is not None:
            if self.role != FALLBACK or self.fallback_reason != problem:
                self.fallback_reason = problem
                self._become(FALLBACK, "falls back to its own Edge connection: %s (leader is %s)",
                             problem, leader)
            return self._spread(self.follow_seconds)
        if self.role == LEADER:
            self._become(FOLLOWER, "lost the leader lease (the store now names %s); closed its "
                         "Edge connection and follows the store", leader)
        elif self.role == FALLBACK:
            self._become(FOLLOWER, "is a follower again, the store is back; leader is %s",
                         leader)
        elif not self._announced:
            self._become(FOLLOWER, "is now a follower, leader is %s", leader)
        return self._spread(self.follow_seconds)

    def _unreachable(self, err: StoreUnavailable) -> float:
        self._failures += 1
        self._last_error = str(err)
        self.fallback_reason = f"the store is unreachable: {err}"
        if self.role == LEADER:
            if time.monotonic() < self._valid_until:
                return self._spread(min(self.renew_seconds, self.follow_seconds) / 2)
            with self._lock:
                self._mine = None
            self._become(FALLBACK, "cannot renew the leader lease (%s) and it has lapsed; "
                         "keeps its own Edge connection until the store returns", err)
        elif self.role == FOLLOWER and self._failures >= self._fallback_after:
            self._become(FALLBACK, "falls back to its own Edge connection: the store is "
                         "unreachable (%s)", err)
        return self._spread(self.follow_seconds)

    def release(self) -> bool:
        """Give the lease up if we hold it and surely still own it (graceful exit)."""
        self._released = True
        with self._lock:
            mine = self._mine
            self._mine = None
        if self.role != LEADER or mine is None:
            return False
        try:   # every backend releases only a lease still ours, atomically
            released = self._backend.lease_release(mine)
        except StoreUnavailable as err:
            self._log.info("fh_prefork: worker %d could not release the leader lease (%s); "
                           "it expires within %g s", self.pid, err, self.ttl)
            return False
        if released:
            self._log.info("fh_prefork: worker %d released the leader lease", self.pid)
        return released

    # -- reading ------------------------------------------------------------------------------

    def status(self) -> ElectionStatus:
        with self._lock:
            lease = self._mine if self._mine is not None else self._current
            valid_for = None
            if self._mine is not None:
                valid_for = max(0.0, self._valid_until - time.monotonic())
                valid_for = None if math.isinf(valid_for) else round(valid_for, 3)
            return {
                "role": self.role,
                "lease": lease.public() if lease is not None else None,
                "holder": self.holder,
                "lease_ttl": self.ttl,
                "renew_seconds": self.renew_seconds,
                "follow_seconds": self.follow_seconds,
                "lease_valid_for": valid_for,
                "since": self._since,
                "terms": self.terms,
                "role_changes": self.changes,
                "lease_retaken": self.retaken,
                "failures": self._failures,
                "fallback_reason": self.fallback_reason if self.role == FALLBACK else None,
                "last_error": self._last_error,
            }

    # -- internals ----------------------------------------------------------------------------

    def _candidate(self) -> Lease:
        return Lease(self.holder, self.host, self.pid, time.time() + self.ttl,
                     self._edge_state(), self._write_problem())

    def _spread(self, period: float) -> float:
        return period * random.uniform(1 - self._jitter, 1 + self._jitter)

    @staticmethod
    def _describe(lease: Lease | None) -> str:
        return f"{lease.host}:{lease.pid}" if lease is not None else "nobody yet"

    def _become(self, role: Role, msg: str, *args: Any) -> None:
        old = self.role
        with self._lock:
            self.role = role
            self._since = time.time()
        if old != role or not self._announced:
            self.changes += 1
            self._log.log(logging.WARNING if role == FALLBACK else logging.INFO,
                          "fh_prefork: worker %d " + msg, self.pid, *args)
        self._announced = True
        if self._on_role is not None:
            self._on_role(old, role)


class EdgeSwitch(EdgeService):  # type: ignore[misc]  # the SDK is untyped
    """The config's EdgeService in leader mode: a real Edge connection only while switched on.

    ``poll()`` (called by ``config.init()`` and ``context.build()``) never
    connects. ``start()`` opens a fresh SupervisedEdge per term; ``stop()``
    closes it within ``close_timeout``; ``close()`` stops for good.
    """

    def __init__(self, factory: Callable[[], SupervisedEdge], close_timeout: float = 1.0) -> None:
        self._factory = factory
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        self._edge: SupervisedEdge | None = None
        self._closed = False
        self.starts = 0

    async def poll(self) -> None:
        """Never connects: whether this worker talks to Edge is the election's decision."""
        return None

    def client_evaluated(self) -> bool:
        return True

    async def context_change(self, header: str) -> None:
        return None

    def start(self) -> bool:
        """Open an Edge connection unless one is open (non-blocking). True if one was opened."""
        with self._lock:
            if self._closed or self._edge is not None:
                return False
            self._edge = edge = self._factory()
            self.starts += 1
        edge.start()
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Close the Edge connection, if any (bounded)."""
        with self._lock:
            edge, self._edge = self._edge, None
        if edge is not None:
            edge.close(timeout=self._close_timeout if timeout is None else timeout)

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            self._closed = True
        self.stop(timeout)

    def live(self) -> bool:
        """This worker leads (or fell back) and its Edge view is current (SupervisedEdge.live)."""
        edge = self._edge
        return edge is not None and edge.live()

    def status(self) -> EdgeStatus:
        edge = self._edge
        status: EdgeStatus = edge.status() if edge is not None else {"state": "standby"}
        status["terms"] = self.starts
        return status
