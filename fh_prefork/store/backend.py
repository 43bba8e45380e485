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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypedDict, runtime_checkable

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


class _PushStatus(TypedDict):
    connected: bool
    reconnects: int | None      # None: nothing to reconnect (inotify)
    last_error: str | None


class PushStatus(_PushStatus, total=False):
    """``ChangeNotifier.status()``: whether notifications arrive, and how it went."""

    messages: int               # Redis: pub/sub messages received
    events: int                 # inotify: directory events received


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

    def status(self) -> PushStatus:
        """``connected`` (notifications arrive now), ``reconnects``, ``last_error``."""
        ...


#: What a backend's optional ``notifier`` method is called with: ``wake(full)``.
Wake = Callable[[bool], None]


# -- optional abilities: the store core asks isinstance(), never getattr() -------------------


@runtime_checkable
class PushBackend(Protocol):
    """A backend that can push: ``notifier(wake)`` makes its notifier (None: not here)."""

    def notifier(self, wake: Wake) -> ChangeNotifier | None:
        ...


@runtime_checkable
class TokenKind(Protocol):
    """A backend that says whether its change tokens are fingerprints of the data.

    Without it they are (memcached, Redis): a token that matches no formula is
    settled. The file backend's tokens are the file's identity: never settled.
    """

    fingerprint_tokens: bool


@runtime_checkable
class ItemLimitBackend(Protocol):
    """A backend whose server can say the largest item it stores (memcached's ``-I``)."""

    def item_limit(self) -> int | None:
        """The server's item limit in bytes; None or 0: it does not say."""
        ...
