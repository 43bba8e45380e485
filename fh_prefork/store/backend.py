"""The narrow interface every store backend implements.

The store core (``core.py``) owns merging, tombstones, fingerprints, retries,
replay and the refresh timer. A backend only moves bytes: read the data and
the tombstones with change tokens, compare-and-set them, create them if
absent. That is the whole contract, so a new backend is a small file and
cannot get the concurrency wrong.

Ordering contract, which is what makes tombstones safe without a transaction
across two keys: ``write`` stores the tombstones *before* the data, and
``read`` reads the data *before* the tombstones. A reader that sees data
without a deleted feature therefore also sees the tombstone that removed it,
and never mistakes the deletion for a loss to be written back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

from .options import validate_key


class StoreKeys(NamedTuple):
    """The keys one environment takes in a key-value store: the data and the three beside it."""

    data: str
    sha: str          # the data's fingerprint, the cross-SDK ``_sha`` key
    tombstones: str   # deletions remembered
    lease: str        # the leader lease


def store_keys(data_key: str) -> StoreKeys:
    """Every key named from ``data_key``, validated: memcached and Redis lay them out alike."""
    return StoreKeys(validate_key(data_key), validate_key(f"{data_key}_sha"),
                     validate_key(f"{data_key}_deleted"), validate_key(f"{data_key}_leader"))


class StoreUnavailable(Exception):
    """The backend could not be reached or answered nonsense; the caller retries later."""


@dataclass(frozen=True)
class Snapshot:
    """One read: the data and tombstone bytes (None when absent) and their CAS tokens."""

    value: bytes | None
    cas_token: Any = None
    change_token: str | None = None   # what change_token() returned for this state, if known
    tombstones: bytes | None = None
    tombstones_cas: Any = None


class StoreBackend(Protocol):
    #: Human-readable location, safe to log and show in status (no secrets).
    description: str
    #: Source tag for updates this store replays into the repository.
    source: str

    def change_token(self) -> str | None:
        """A cheap token that changes whenever the data changes (None: no data)."""
        ...

    def read(self) -> Snapshot:
        """Read the data, then the tombstones, with what compare-and-set needs."""
        ...

    def write(self, value: bytes, fingerprint: str, previous: Snapshot,
              tombstones: bytes | None = None) -> str | None:
        """Store ``value`` (and ``tombstones`` first, unless None) only if both are unchanged
        since ``previous``.

        Creates what ``previous`` found absent. Returns the new change token
        when stored, None when another writer got there first (a tombstone
        write that landed before a lost data write is harmless: tombstones
        only ever grow by merge). Only the server's answer decides.
        """
        ...

    def settle(self, snapshot: Snapshot, fingerprint: str) -> str | None:
        """Make the change token agree with data just read; return the token for it.

        Only asked of a backend whose change tokens are fingerprints (a backend
        sets ``fingerprint_tokens = False`` when they are not, e.g. a file's
        identity, and is then never asked).
        """
        ...

    def close(self) -> None:
        ...


# -- push (optional) --------------------------------------------------------------------------


class ChangeNotifier(Protocol):
    """Wakes a store when another writer changed the data: the optional push part.

    A backend that can push offers ``notifier(wake) -> ChangeNotifier | None``
    (None: not on this platform). ``wake(full)`` is called on the notifier's
    own thread and must only mark: the store thread then runs a refresh tick
    (a cheap change-token check, so a store's own writes cost nothing), or a
    full read when ``full`` (notifications may have been lost, e.g. while a
    subscriber reconnected). Notifications may be late, duplicated or lost:
    the store's refresh timer stays on as the safety poll.
    """

    def start(self) -> None:
        ...

    def close(self) -> None:
        """Stop promptly (well under a second); no ``wake`` after it returns."""
        ...

    def status(self) -> dict[str, Any]:
        """``connected`` (notifications arrive now), ``reconnects``, ``last_error``."""
        ...


#: What a backend's optional ``notifier`` method is called with: ``wake(full)``.
Wake = Callable[[bool], None]


# -- leader lease (FH_PREFORK_EDGE_MODE=leader) ------------------------------------------------

#: Bytes a lease record may take; longer values are junk (the file backend pads to this size).
LEASE_RECORD_BYTES = 512


@dataclass(frozen=True)
class Lease:
    """Who holds the leader lease, stored as JSON bytes (plain JSON, never a serialized object).

    ``holder`` is ``host:pid:nonce`` (the nonce tells two terms of one pid
    apart); ``expires_at`` is unix time, for people and the CLI: decisions use
    the backend's own expiry (memcached) or lock (file) and a local monotonic
    deadline, never a comparison of two hosts' clocks. ``edge`` is the
    leader's Edge connection state at its last renewal (``connected``,
    ``key_not_found``...): followers never talk to Edge, and learn from it
    that the API key was deleted. ``store`` is why the leader cannot write the
    state it holds (over the item limit), if it cannot: its followers would
    otherwise serve the older state in the store for as long as that lasts.
    """

    holder: str
    host: str
    pid: int
    expires_at: float
    edge: str | None = None
    store: str | None = None

    def encode(self) -> bytes:
        record: dict[str, Any] = {"holder": self.holder, "host": self.host, "pid": self.pid,
                                  "expires_at": round(self.expires_at, 3)}
        if self.edge is not None:
            record["edge"] = self.edge[:40]
        if self.store is not None:
            record["store"] = self.store[:200]
        return json.dumps(record, separators=(",", ":")).encode("utf-8")

    def stamped(self, ttl: float) -> Lease:
        """This lease renewed for ``ttl`` seconds from now (for the record; see above)."""
        return replace(self, expires_at=time.time() + ttl)

    @classmethod
    def decode(cls, raw: bytes | None) -> Lease | None:
        """The lease in ``raw``, or None when absent or not a lease record (junk)."""
        if not raw or len(raw) > LEASE_RECORD_BYTES:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        holder, host, pid, expires = (data.get("holder"), data.get("host"), data.get("pid"),
                                      data.get("expires_at"))
        if not (isinstance(holder, str) and holder and isinstance(host, str)
                and isinstance(pid, int) and not isinstance(pid, bool)
                and isinstance(expires, (int, float)) and not isinstance(expires, bool)):
            return None
        edge, store = data.get("edge"), data.get("store")
        return cls(holder, host, pid, float(expires), edge if isinstance(edge, str) else None,
                   store if isinstance(store, str) and store else None)

    def public(self) -> dict[str, Any]:
        return {"holder": self.holder, "host": self.host, "pid": self.pid,
                "expires_at": self.expires_at, "edge": self.edge, "store": self.store}


@dataclass(frozen=True)
class LeaseAnswer:
    """A lease operation's outcome.

    ``held``: the caller holds the lease now. ``current``: the lease the
    backend holds, as far as it said (the caller's own when ``held``; None when
    nobody holds it or the record is unreadable). ``valid_for``: seconds from
    the start of the call during which a held lease cannot have passed to
    anyone else (shorter than the nominal time to live by the backend's clock
    granularity; infinite for a lock that dies only with its holder).
    """

    held: bool
    current: Lease | None
    valid_for: float = 0.0
    #: the holder renewed a lease that had vanished (evicted, the store restarted empty,
    #: the lease file deleted): it took it again, since nobody else had
    retaken: bool = False


class LeaseBackend(Protocol):
    """Lease operations of a backend that supports leader mode. Store-thread only.

    A lease is *vacant* when the backend names nobody: the record is absent
    (expired, evicted, the store restarted empty) or unreadable. A vacant
    lease may still belong to a live holder that has not renewed yet, so the
    holder takes it back at its renewal, and a contender that saw a holder
    lately leaves it alone (``vacant=False``) until that holder's time to live
    has run out. A *released* lease (its holder let go, see ``lease_release``)
    is free at once for anyone.
    """

    description: str

    def lease_read(self) -> Lease | None:
        """Who holds the lease now (None: nobody, or an unreadable record)."""
        ...

    def lease_acquire(self, candidate: Lease, ttl: float, vacant: bool = True) -> LeaseAnswer:
        """Take the lease for ``candidate`` if it is released or already ours, and, when
        ``vacant``, if it is vacant; ``held=False, current=None``: vacant, left alone."""
        ...

    def lease_renew(self, lease: Lease, ttl: float) -> LeaseAnswer:
        """Extend ``lease`` while the backend names it, or take it again if it vanished
        (``retaken``); ``held=False``: another holder is named, the lease is lost."""
        ...

    def lease_release(self, lease: Lease) -> bool:
        """Give the lease up if, and only if, it is still ours; True when released.

        What is left says *released* until the lease would have expired, so
        contenders that leave a vacant lease to its holder take it at once.
        """
        ...


def released_seconds(lease: Lease) -> float:
    """How long a released marker should live: what was left of the lease (its holder's
    own clock stamped ``expires_at``), so no contender waits for it longer than that."""
    return max(0.001, lease.expires_at - time.time())
