"""The leader lease (``FH_PREFORK_EDGE_MODE=leader``): its record and the backend calls.

Kept apart from the data contract in ``backend.py``: only leader mode needs it,
and a backend without these calls still stores and shares the state (its
workers then each connect to Edge). The record is plain JSON, never a
serialized object, and decisions never compare two hosts' clocks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypedDict, runtime_checkable

#: Bytes a lease record may take; longer values are junk (the file backend pads to this size).
LEASE_RECORD_BYTES = 512


class LeaseRecord(TypedDict):
    """``Lease.public()``: the lease as status and the CLI show it."""

    holder: str
    host: str
    pid: int
    expires_at: float
    edge: str | None
    store: str | None


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

    def public(self) -> LeaseRecord:
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


@runtime_checkable
class LeaseBackend(Protocol):
    """Lease operations of a backend that supports leader mode. Store-thread only.

    Runtime-checkable: leader mode asks ``isinstance(backend, LeaseBackend)``
    (the four calls and ``description`` are there), so a backend without a
    lease is told apart by its type, never by probing attribute names.

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
