"""SessionStore: feature states shared by processes through a backend.

One thread per store does all backend I/O: it flushes updates that arrived
from Edge (merge by version, compare-and-set, re-read and re-merge on
conflict) and runs the jittered refresh timer that replays what other
processes wrote. The Edge thread only queues; the request path never touches
the store at all.

Guarantees, each proven by a multi-process test:

* an update this process received is never dropped: a failed or conflicted
  write stays pending and is retried until a write holds it;
* only the backend's compare-and-set answer decides who won;
* the data key is the compare-and-set target, the change token is derived
  from it, and a periodic full read repairs a token left stale by a writer
  that died between the two.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from .. import features as fs
from ..apikey import environment_id, require_client_evaluated
from ..listener import ListeningRepository, RawUpdateFeatureListener
from ..ratelog import RateLimitedLog
from . import faults
from .backend import Snapshot, StoreBackend, StoreUnavailable
from .options import SessionStoreOptions

log = logging.getLogger("fh_prefork.store")


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
    seeds: int = 0             # times an empty store was seeded from memory
    errors: int = 0            # backend failures
    junk: int = 0              # unusable values or entries found in the store

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class _Pending:
    updates: dict[str, fs.FeatureState] = field(default_factory=dict)
    deletes: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.updates or self.deletes)

    def add_update(self, feature: fs.FeatureState) -> None:
        held = self.updates.get(feature["id"])
        if held is None or feature["version"] > held["version"]:
            self.updates[feature["id"]] = feature
        deleted = self.deletes.get(feature["id"])
        if deleted is not None and feature["version"] > deleted:
            del self.deletes[feature["id"]]

    def add_delete(self, fid: str, version: int) -> None:
        self.deletes[fid] = max(version, self.deletes.get(fid, -1))
        held = self.updates.get(fid)
        if held is not None and held["version"] <= version:
            del self.updates[fid]

    def absorb(self, other: _Pending) -> None:
        for feature in other.updates.values():
            self.add_update(feature)
        for fid, version in other.deletes.items():
            self.add_delete(fid, version)


@dataclass
class _Task:
    """A callable the store thread runs on its own schedule (see ``SessionStore.add_task``)."""

    run: Callable[[], float]
    on_close: Callable[[], object] | None
    due: float          # time.monotonic()
    name: str


def attach_repository(config: FeatureHubConfig) -> ListeningRepository:
    """Return the config's ListeningRepository, installing one if it has a plain repository."""
    repo = config.repository()
    if isinstance(repo, ListeningRepository):
        return repo
    if getattr(config, "_edge_service", None) is not None:
        raise ValueError("create the session store before the config connects to Edge "
                         "(before config.init() or config.new_context())")
    listening = ListeningRepository()
    listening.notify("features", repo.extract_feature_state(), source="existing-repository")
    for interceptor in getattr(repo, "_interceptors", []):
        listening.register_interceptor(interceptor)
    config.repository(listening)
    return listening


class SessionStore(RawUpdateFeatureListener):
    """Shares one environment's feature states between processes through ``backend``."""

    def __init__(self, backend: StoreBackend, config: FeatureHubConfig,
                 options: SessionStoreOptions) -> None:
        api_key = config.get_api_keys()[0]
        require_client_evaluated(api_key)
        self.environment_id = environment_id(api_key)
        self.options = options
        self.source = backend.source
        self._backend = backend
        self._log = options.logger or log
        self._repository = attach_repository(config)
        self.counters = StoreCounters()
        self._cond = threading.Condition()
        self._pending = _Pending()
        self._in_flight = False
        self._closed = False
        self._refresh_requested = False
        self._ids_by_key: dict[str, str] = {}
        self._stored_ids: set[str] = set()
        self._change_token: str | None = None
        self._fingerprint: str | None = None
        self._last_refresh: float | None = None
        self._last_write: float | None = None
        self._last_error: str | None = None
        self._ticks_since_read = 0
        self._recent_ticks: deque[float] = deque(maxlen=64)  # monotonic, system-wide on Linux
        self._backend_log = RateLimitedLog(self._log)
        self._size_log = RateLimitedLog(self._log)
        self._junk_log = RateLimitedLog(self._log)
        self._tasks: list[_Task] = []

        try:
            self._read_and_replay()
        except StoreUnavailable as err:
            self._note_failure("cannot read %s at start, serving from Edge until it returns: %s",
                               err)
        self._repository.register_raw_update_listener(self)
        self._thread = threading.Thread(target=self._run, name=f"fh-prefork-{self.source}",
                                        daemon=True)
        self._thread.start()

    # -- RawUpdateFeatureListener: called on the notifying thread, must only queue ---------

    def process_updates(self, features: list[fs.FeatureState], source: str) -> None:
        if source == self.source or not features:
            return
        with self._cond:
            for feature in features:
                self._pending.add_update(feature)
            self._cond.notify_all()

    def process_update(self, feature: fs.FeatureState, source: str) -> None:
        self.process_updates([feature], source)

    def delete_feature(self, feature: fs.FeatureState, source: str) -> None:
        if source == self.source:
            return
        fid = feature.get("id") if isinstance(feature.get("id"), str) else None
        fid = fid or self._ids_by_key.get(str(feature.get("key")))
        if not fid:
            return
        version = feature.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            version = fs.MAX_VERSION
        with self._cond:
            self._pending.add_delete(fid, version)
            self._cond.notify_all()

    def close(self, flush_timeout: float = 1.0) -> None:
        """Flush what is pending (bounded by ``flush_timeout``), stop the thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
        if flush_timeout > 0:
            self.flush(flush_timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._repository.remove_raw_update_listener(self)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=max(flush_timeout, 0) + 2.0)
        if not self._thread.is_alive():  # the store thread is gone: its I/O is ours now
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
        ``on_close`` runs once in ``close()`` after the store thread stopped
        (and not at all if it failed to stop in time), before the backend closes.
        An exception in ``run`` is logged and retried after one refresh period.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._tasks.append(_Task(run, on_close, time.monotonic(), name))
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
            except Exception:
                self.counters.errors += 1
                self._log.exception("fh_prefork: %s store task %s failed", self.source,
                                    task.name)
                delay = self._period()
            task.due = time.monotonic() + max(0.0, delay)

    # -- public helpers ---------------------------------------------------------------------

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every queued update has been written (or found already stored)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._pending or self._in_flight) and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return not self._pending

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

    def status(self) -> dict[str, Any]:
        with self._cond:
            pending = len(self._pending.updates) + len(self._pending.deletes)
            flushing = self._in_flight
        return {
            "backend": self._backend.description,
            "source": self.source,
            "environment_id": self.environment_id,
            "fingerprint": self._fingerprint,
            "features": len(self._stored_ids),
            "pending": pending,
            "flushing": flushing,      # a batch is being written right now
            "last_refresh": self._last_refresh,
            "last_write": self._last_write,
            "last_error": self._last_error,
            "healthy": not self._backend_log.failing,
            "refresh_seconds": self.options.refresh_timeout,
            "counters": self.counters.as_dict(),
            "recent_ticks": list(self._recent_ticks),
        }

    # -- the store thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic() + random.uniform(0, self.options.refresh_timeout)
        retry_at: float | None = None
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    due = min(next_tick, retry_at) if retry_at is not None else next_tick
                    task_due = self._next_task_due()
                    if task_due is not None:
                        if now >= task_due:
                            break
                        due = min(due, task_due)
                    if self._refresh_requested or now >= next_tick:
                        break
                    if self._pending and (retry_at is None or now >= retry_at):
                        break
                    self._cond.wait(max(0.0, due - now))
                if self._closed:
                    return
            try:
                self._run_due_tasks()  # first: a leader that lost its lease stops before writing
                now = time.monotonic()
                if self._has_pending() and (retry_at is None or now >= retry_at):
                    retry_at = None if self._flush() else time.monotonic() + self._period() / 4
                if self._refresh_requested or now >= next_tick:
                    full = self._refresh_requested
                    self._refresh_requested = False
                    if now >= next_tick:
                        next_tick = now + self._period()
                    self._tick(full)
            except Exception:  # the thread must outlive any bug or junk
                self.counters.errors += 1
                self._log.exception("fh_prefork: %s store thread error", self.source)
                retry_at = time.monotonic() + self._period() / 4
            finally:
                with self._cond:
                    self._cond.notify_all()

    def _period(self) -> float:
        j = self.options.refresh_jitter
        return self.options.refresh_timeout * random.uniform(1 - j, 1 + j)

    def _has_pending(self) -> bool:
        with self._cond:
            return bool(self._pending)

    def _tick(self, full: bool) -> None:
        """One refresh: a cheap token read, and a full read only when something changed."""
        self.counters.refreshes += 1
        self._recent_ticks.append(time.monotonic())
        self._ticks_since_read += 1
        try:
            if not full and self._ticks_since_read < self.options.verify_every:
                token = self._backend.change_token()
                if token is not None and token == self._change_token:
                    self._last_refresh = time.time()
                    self._note_success()
                    return
            self._read_and_replay()
        except StoreUnavailable as err:
            self._note_failure("cannot refresh from %s: %s", err)

    def _read_and_replay(self) -> None:
        snapshot = self._backend.read()
        self.counters.reads += 1
        self._ticks_since_read = 0
        decoded = self._decode(snapshot)
        clean = snapshot.value is not None and decoded.problem is None and not decoded.dropped
        if not clean:  # empty, unusable or partly junk: rewrite it from what this process knows
            self._seed_from_memory(snapshot)
        fingerprint = fs.fingerprint(decoded.features)
        self._change_token = (self._backend.settle(snapshot, fingerprint) if clean
                              else snapshot.change_token)
        # Only a clean value says which features are gone; junk or emptiness says nothing.
        self._replay(decoded.features, complete=clean)
        self._fingerprint = fingerprint if clean else None
        self._last_refresh = time.time()
        self._note_success()

    def _seed_from_memory(self, snapshot: Snapshot) -> None:
        """The store lost its data (restart, eviction, junk): queue what this process knows."""
        known = self._repository.feature_states()
        if not known:
            return
        with self._cond:
            for feature in known:
                if fs.sanitize_feature(feature) is not None:
                    self._pending.add_update(feature)
        self.counters.seeds += 1
        self._log.info("fh_prefork: %s is %s; seeding it with %d feature(s) from memory",
                       self._backend.description,
                       "empty" if snapshot.value is None else "damaged", len(known))

    def _decode(self, snapshot: Snapshot) -> fs.Decoded:
        decoded = fs.decode(snapshot.value, self.options.max_item_bytes)
        if decoded.problem or decoded.dropped:
            self.counters.junk += 1
            what = decoded.problem or f"{decoded.dropped} malformed or duplicate entr(ies) skipped"
            self._junk_log.failure("fh_prefork: junk in %s: %s; it is repaired by the next write",
                                   self._backend.description, what)
        return decoded

    def _replay(self, stored: list[fs.FeatureState], complete: bool = True) -> None:
        """Tell the repository what other processes wrote: newer versions and deletions.

        Deletions are inferred only from a ``complete`` (clean) value: a feature
        missing from a junk or empty value was not deleted by anyone.
        """
        repo_features = self._repository.features
        with self._cond:
            pending_ids = set(self._pending.updates)
            pending_deletes = dict(self._pending.deletes)
        newer = []
        for feature in stored:
            if pending_deletes.get(feature["id"], -1) >= feature["version"]:
                continue  # deleted here, not yet written: do not bring it back
            holder = repo_features.get(feature["key"])
            if holder is None or holder.get_version < feature["version"]:
                newer.append(feature)
        now_ids = {f["id"] for f in stored}
        gone = self._stored_ids - now_ids if complete else set()
        removed = [(fid, key) for key, fid in self._ids_by_key.items()
                   if fid in gone and fid not in pending_ids]
        self._stored_ids = now_ids if complete else self._stored_ids | now_ids
        for feature in stored:
            self._ids_by_key[feature["key"]] = feature["id"]
        if newer:
            self.counters.replays += 1
            self._repository.notify("features", newer, source=self.source)
        for fid, key in removed:
            self.counters.replays += 1
            self._repository.notify("delete_feature", {"id": fid, "key": key},
                                    source=self.source)

    def _flush(self) -> bool:
        """Write everything pending. True when done, False to retry later (nothing is lost)."""
        with self._cond:
            batch, self._pending = self._pending, _Pending()
            self._in_flight = True
        done = False
        try:
            done = self._write(batch)
        except StoreUnavailable as err:
            self._note_failure("cannot write to %s, keeping %d update(s) for later: %s", err,
                               extra=len(batch.updates) + len(batch.deletes))
        finally:
            with self._cond:
                if not done:
                    batch.absorb(self._pending)
                    self._pending = batch
                self._in_flight = False
                self._cond.notify_all()
        return done

    def _write(self, batch: _Pending) -> bool:
        for attempt in range(self.options.retry_update_count):
            if attempt:
                self.counters.retries += 1
                base = self.options.backoff_timeout / 1000.0
                time.sleep(random.uniform(0, base * (2 ** min(attempt - 1, 3))))
            snapshot = self._backend.read()
            self.counters.reads += 1
            decoded = self._decode(snapshot)
            merged = fs.merge(decoded.by_id, batch.updates, batch.deletes)
            usable = snapshot.value is not None and decoded.problem is None
            if not merged.changed and usable and not decoded.dropped:
                self.counters.unchanged += 1
                self._after_store(merged.features, self._backend.settle(
                    snapshot, fs.fingerprint(merged.features)))
                return True
            payload = fs.encode(merged.features)
            if len(payload) > self.options.max_item_bytes:
                self.counters.errors += 1
                self._last_error = f"merged state of {len(payload)} bytes exceeds the item limit"
                self._size_log.failure(
                    "fh_prefork: merged feature state is %d bytes, over the %d-byte item limit "
                    "of %s; serving from memory and keeping the update pending",
                    len(payload), self.options.max_item_bytes, self._backend.description,
                    level=logging.ERROR)
                self.counters.deferred += 1
                return False
            fingerprint = fs.fingerprint(merged.features)
            faults.hit("before_write")
            self.counters.write_attempts += 1
            token = self._backend.write(payload, fingerprint, snapshot)
            if token is not None:
                self.counters.writes += 1
                self._last_write = time.time()
                self._after_store(merged.features, token)
                self._fingerprint = fingerprint
                return True
            self.counters.cas_conflicts += 1
        self.counters.deferred += 1
        self._log.warning("fh_prefork: %d compare-and-set conflicts in a row on %s; "
                          "retrying on the next tick", self.options.retry_update_count,
                          self._backend.description)
        return False

    def _after_store(self, stored: list[fs.FeatureState], token: str | None) -> None:
        self._change_token = token
        self._fingerprint = fs.fingerprint(stored)
        self._replay(stored)
        self._note_success()

    def _note_failure(self, msg: str, err: Exception, extra: int | None = None) -> None:
        self.counters.errors += 1
        self._last_error = str(err)
        args: tuple[Any, ...] = (self._backend.description, err)
        if extra is not None:
            args = (self._backend.description, extra, err)
        self._backend_log.failure("fh_prefork: " + msg, *args)

    def _note_success(self) -> None:
        self._backend_log.recovered("fh_prefork: %s is back", self._backend.description)
        self._size_log.recovered("fh_prefork: merged state fits %s again",
                                 self._backend.description)
