"""An in-memory store backend: the StoreBackend contract without a server, for tests.

The store core's logic (merging, tombstones, fingerprints, retries, leases) does
not depend on the medium, so it can be tested once, fast, on a medium that is
nothing but a locked dictionary, with an injectable clock (for the lease, and
with a :class:`~fh_prefork.testing.clock.ManualClock` for the absence grace and
tombstone ages of the stores on it, which a test steps instead of sleeping). It is
held to the same contract suite as memcached, Redis and the file store
(``tests/store/test_contract.py``), so what passes here means the same there.

It is laid out like the memcached store, the shape every FeatureHub SDK's
store shares: the data, its fingerprint (``_sha``, the change token), the
tombstones (``_deleted``) and the leader lease (``_leader``), each under its own
key with its own compare-and-set version, written in the same order (tombstones,
then data, then the fingerprint) so a write can lose its race after its
tombstones landed, as it can on a real server.

``MemoryMedium`` is the server: every :class:`MemoryBackend` built on one medium
(one per simulated process) sees the others' writes. ``medium.down = True``
makes every call raise ``StoreUnavailable`` (an outage); ``medium.clear()`` is
a restart that loses everything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from .. import features as fs
from ..apikey import environment_id
from ..store.backend import Snapshot, StoreUnavailable, store_keys
from ..store.core import SessionStore
from ..store.lease import Lease, LeaseAnswer, released_seconds
from ..store.options import SessionStoreOptions
from .clock import ManualClock

SOURCE = "memory"


@dataclass(frozen=True)
class _Item:
    value: bytes
    version: int                        # the compare-and-set token: bumped on every store
    expires_at: float | None = None     # on the medium's clock; None: never


class MemoryMedium:
    """The shared "server": keys to bytes, each with a compare-and-set version.

    ``clock`` (seconds) decides when a lease expires; a test steps it. A
    :class:`ManualClock` there is also what :func:`memory_store`'s stores judge by.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.down = False
        self.operations = 0          # calls answered (a test counts what a change costs)
        self._items: dict[str, _Item] = {}
        self._versions = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Lose every key (a server restarted without persistence)."""
        with self._lock:
            self._items.clear()

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(k for k in self._items if self._live(k) is not None)

    # -- the operations a backend uses, each atomic ------------------------------------------

    def get(self, key: str) -> tuple[bytes | None, int | None]:
        with self._answer():
            item = self._live(key)
            return (None, None) if item is None else (item.value, item.version)

    def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store only if absent."""
        with self._answer():
            if self._live(key) is not None:
                return False
            self._put(key, value, ttl)
            return True

    def cas(self, key: str, value: bytes, version: int | None, ttl: float | None = None
            ) -> bool:
        """Store only if the key still has ``version``."""
        with self._answer():
            item = self._live(key)
            if item is None or item.version != version:
                return False
            self._put(key, value, ttl)
            return True

    def delete_if(self, key: str, version: int | None) -> bool:
        with self._answer():
            item = self._live(key)
            if item is None or item.version != version:
                return False
            del self._items[key]
            return True

    # -- inside the lock ----------------------------------------------------------------------

    def _answer(self) -> _Answering:
        return _Answering(self)

    def _live(self, key: str) -> _Item | None:
        item = self._items.get(key)
        if item is not None and item.expires_at is not None and self.clock() >= item.expires_at:
            del self._items[key]
            return None
        return item

    def _put(self, key: str, value: bytes, ttl: float | None) -> None:
        self._versions += 1
        expires = None if ttl is None else self.clock() + ttl
        self._items[key] = _Item(bytes(value), self._versions, expires)


class _Answering:
    """The medium's lock for one operation; an outage refuses it first."""

    def __init__(self, medium: MemoryMedium) -> None:
        self._medium = medium

    def __enter__(self) -> None:
        if self._medium.down:
            raise StoreUnavailable("the in-memory store is down (medium.down)")
        self._medium._lock.acquire()
        self._medium.operations += 1

    def __exit__(self, *exc: object) -> None:
        self._medium._lock.release()


class MemoryBackend:
    """One process's connection to a :class:`MemoryMedium` (the StoreBackend contract)."""

    source = SOURCE

    def __init__(self, medium: MemoryMedium, data_key: str,
                 description: str = "memory") -> None:
        self.medium = medium
        self.data_key, self.sha_key, self.tombstones_key, self.lease_key = store_keys(data_key)
        self.description = description
        self._closed = False

    def change_token(self) -> str | None:
        self._open()
        sha, _ = self.medium.get(self.sha_key)
        return fs.decode_fingerprint(sha)

    def read(self) -> Snapshot:
        # data (with its fingerprint) first, tombstones second: backend.py's ordering contract
        self._open()
        value, cas = self.medium.get(self.data_key)
        sha, _ = self.medium.get(self.sha_key)
        tombstones, tombstones_cas = self.medium.get(self.tombstones_key)
        return Snapshot(value=value, cas_token=cas, change_token=fs.decode_fingerprint(sha),
                        tombstones=tombstones, tombstones_cas=tombstones_cas)

    def write(self, value: bytes, fingerprint: str, previous: Snapshot,
              tombstones: bytes | None = None) -> str | None:
        self._open()
        if tombstones is not None and not self._store(self.tombstones_key, tombstones,
                                                      previous.tombstones is None,
                                                      previous.tombstones_cas):
            return None
        if not self._store(self.data_key, value, previous.value is None, previous.cas_token):
            return None
        return fingerprint if self._set_fingerprint(value, fingerprint) else None

    def settle(self, snapshot: Snapshot, fingerprint: str) -> str | None:
        self._open()
        if snapshot.value is None or not self._set_fingerprint(snapshot.value, fingerprint):
            return None
        return fingerprint

    def _store(self, key: str, value: bytes, absent: bool, cas: Any) -> bool:
        if absent:
            return self.medium.add(key, value)
        return self.medium.cas(key, value, cas if isinstance(cas, int) else None)

    def _set_fingerprint(self, value: bytes, fingerprint: str) -> bool:
        """Set ``_sha`` only while the data still is ``value`` (as the memcached backend does)."""
        for _ in range(5):
            _, sha_cas = self.medium.get(self.sha_key)
            data, _ = self.medium.get(self.data_key)
            if data != value:
                return False        # moved on: the newer writer sets its own
            encoded = fingerprint.encode("ascii")
            if (self.medium.add(self.sha_key, encoded) if sha_cas is None
                    else self.medium.cas(self.sha_key, encoded, sha_cas)):
                return True
        return False

    # -- leader lease -------------------------------------------------------------------------

    def lease_read(self) -> Lease | None:
        self._open()
        raw, _ = self.medium.get(self.lease_key)
        return Lease.decode(raw)

    def lease_acquire(self, candidate: Lease, ttl: float, vacant: bool = True) -> LeaseAnswer:
        self._open()
        raw, cas = self.medium.get(self.lease_key)
        mine = candidate.stamped(ttl)
        if raw is None:
            if not vacant:
                return LeaseAnswer(False, None)   # left to its last holder, who may renew
            if self.medium.add(self.lease_key, mine.encode(), ttl):
                return LeaseAnswer(True, mine, ttl)
            return LeaseAnswer(False, self.lease_read())
        current = Lease.decode(raw)
        if current is not None and current.holder != candidate.holder:
            return LeaseAnswer(False, current)
        if current is None and raw != _RELEASED and not vacant:
            return LeaseAnswer(False, None)       # junk: vacant, left alone likewise
        return self._cas_lease(mine, ttl, cas)    # ours already, released, or junk

    def lease_renew(self, lease: Lease, ttl: float) -> LeaseAnswer:
        self._open()
        raw, cas = self.medium.get(self.lease_key)
        mine = lease.stamped(ttl)
        if raw is None:    # vanished (evicted, restarted empty): still ours, take it back
            if self.medium.add(self.lease_key, mine.encode(), ttl):
                return LeaseAnswer(True, mine, ttl, retaken=True)
            raw, cas = self.medium.get(self.lease_key)
            if raw is None:
                return LeaseAnswer(False, None)
        current = Lease.decode(raw)
        if current is not None and current.holder != lease.holder:
            return LeaseAnswer(False, current)
        answer = self._cas_lease(mine, ttl, cas)
        return replace(answer, retaken=answer.held and current is None)

    def lease_release(self, lease: Lease) -> bool:
        self._open()
        raw, cas = self.medium.get(self.lease_key)
        current = Lease.decode(raw)
        if current is None or current.holder != lease.holder:
            return False
        # as on memcached: a released marker every contender takes at once, for what was
        # left of the lease (a vacant lease is left to its last holder until it expires)
        return self.medium.cas(self.lease_key, _RELEASED, cas, max(0.001, released_seconds(lease)))

    def _cas_lease(self, mine: Lease, ttl: float, cas: int | None) -> LeaseAnswer:
        if self.medium.cas(self.lease_key, mine.encode(), cas, ttl):
            return LeaseAnswer(True, mine, ttl)
        return LeaseAnswer(False, self.lease_read())

    def close(self) -> None:
        self._closed = True

    def _open(self) -> None:
        if self._closed:
            raise StoreUnavailable("this in-memory backend was closed")


#: What a released lease holds (see lease_release), as on memcached.
_RELEASED = b"released"


def memory_store(medium: MemoryMedium, config: FeatureHubConfig,
                 opts: SessionStoreOptions | Mapping[str, Any] | None = None, *,
                 start: bool = True, clock: Callable[[], float] | None = None) -> SessionStore:
    """A store on ``medium`` for ``config``'s environment (one per simulated process).

    ``clock``: what the store judges time by (see SessionStore); by default the
    medium's when it is a :class:`ManualClock`, so one ``advance`` steps the
    leases, the absence grace and the tombstone ages together; else real time.
    """
    options = SessionStoreOptions.coerce(opts)
    data_key = f"{options.prefix}_{environment_id(config.get_api_keys()[0])}"
    backend = MemoryBackend(medium, data_key, f"memory ({data_key})")
    if clock is None and isinstance(medium.clock, ManualClock):
        clock = medium.clock
    return SessionStore(backend, config, options, start=start, clock=clock)
