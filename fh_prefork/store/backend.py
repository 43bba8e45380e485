"""The narrow interface every store backend implements.

The store core (``core.py``) owns merging, fingerprints, retries, replay and
the refresh timer. A backend only moves bytes: read the value with a change
token, compare-and-set it, create it if absent. That is the whole contract,
so a new backend is a small file and cannot get the concurrency wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class StoreUnavailable(Exception):
    """The backend could not be reached or answered nonsense; the caller retries later."""


@dataclass(frozen=True)
class Snapshot:
    """One read of the data key: the bytes (None when absent) and the backend's CAS token."""

    value: bytes | None
    cas_token: Any = None
    change_token: str | None = None   # what change_token() returned for this state, if known


class StoreBackend(Protocol):
    #: Human-readable location, safe to log and show in status (no secrets).
    description: str
    #: Source tag for updates this store replays into the repository.
    source: str

    def change_token(self) -> str | None:
        """A cheap token that changes whenever the data changes (None: no data)."""
        ...

    def read(self) -> Snapshot:
        """Read the data with what compare-and-set needs."""
        ...

    def write(self, value: bytes, fingerprint: str, previous: Snapshot) -> str | None:
        """Store ``value`` only if the data is still ``previous``.

        Creates the data when ``previous.value`` is None. Returns the new
        change token when stored, None when another writer got there first.
        Only the server's answer decides.
        """
        ...

    def settle(self, snapshot: Snapshot, fingerprint: str) -> str | None:
        """Make the change token agree with data just read; return the token for it."""
        ...

    def close(self) -> None:
        ...
