"""Options of the session stores, validated once at construction."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="SessionStoreOptions")


def _opt(default: Any, help: str, shown: str | None = None) -> Any:
    """A declared option: its default, why, and how the README shows the default."""
    return field(default=default, metadata={"help": help, "shown": shown})


#: memcached keys are printable ASCII without spaces; pymemcache refuses others on every call,
#: which would look like an outage, so they are refused here, once.
_KEY_UNSAFE = re.compile(r"[^\x21-\x7e]")
#: the state written at most where neither the option nor the server says: memcached's
#: default item limit (1 MiB), less room for the item's header and key
DEFAULT_MAX_ITEM_BYTES = 1024 * 1024 - 1024
#: memcached's own key length limit; the file store uses the same rule so keys are portable.
MAX_KEY_BYTES = 250


@dataclass(frozen=True)
class SessionStoreOptions:
    """Options shared by every backend (names follow the Ruby SDK's store).

    Defaults are for a prefork server: a refresh every 5 s, spread by +/-20%
    across workers, keeps N workers x 12 reads/min cheap while bounding how
    long a worker can lag behind an update that reached another worker's
    stream. Conflicts retry at once with a few ms of jitter; after
    ``retry_update_count`` conflicts in a row the write is deferred to the
    next tick, never dropped.
    """

    prefix: str = _opt("featurehub", "the cross-SDK key prefix")
    backoff_timeout: int = _opt(10, "base of the jittered wait after a compare-and-set conflict; "
                                "doubles up to 8x", "10 ms")
    retry_update_count: int = _opt(64, "conflicts in a row before a write is deferred to the "
                                   "next tick (never dropped)")
    refresh_timeout: float = _opt(5.0, "seconds between refresh ticks", "5 s")
    refresh_jitter: float = _opt(0.2, "each period is uniform in [1-j, 1+j] x refresh_timeout")
    logger: logging.Logger | None = _opt(None, "where the store logs", "`fh_prefork.store`")
    max_item_bytes: int | None = _opt(None, "largest state written, overriding the server's "
                                      "own limit (memcached's `item_size_max`, asked once as "
                                      "the store's thread starts, less 1 KiB of headroom); "
                                      "where the server does "
                                      "not say, 1 MiB - 1 KiB (memcached's default)",
                                      "the server's limit")
    verify_every: int = _opt(12, "every Nth tick syncs in full even if the fingerprint looks "
                             "unchanged: bounds how long a stale value goes unhealed")
    tombstone_seconds: float = _opt(7 * 24 * 3600.0, "how long a deletion is remembered "
                                    "(see How it works)", "7 days")
    max_tombstones: int = _opt(1000, "deletions remembered at most, oldest dropped first")
    edge_absence_seconds: float = _opt(300.0, "a feature that Edge's current view keeps "
                                       "lacking for this long is removed until Edge names it "
                                       "again (a delete no stream heard; see "
                                       "fh_prefork.absence)", "300 s")
    push: bool = _opt(True, "wake at once on the backend's change notifications (Redis "
                      "pub/sub, inotify on the embedded store); the refresh timer stays on as "
                      "the safety poll")

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ValueError("prefix must be a non-empty string")
        if _KEY_UNSAFE.search(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} contains spaces or control characters "
                             "(or non-ASCII ones: memcached keys are ASCII)")
        _positive_int("backoff_timeout", self.backoff_timeout, allow_zero=True)
        _positive_int("retry_update_count", self.retry_update_count)
        if self.max_item_bytes is not None:
            _positive_int("max_item_bytes", self.max_item_bytes)
        _positive_int("verify_every", self.verify_every)
        _positive_int("max_tombstones", self.max_tombstones)
        if not isinstance(self.push, bool):
            raise ValueError(f"push must be True or False, got {self.push!r}")
        if not isinstance(self.tombstone_seconds, (int, float)) or isinstance(
            self.tombstone_seconds, bool
        ) or not self.tombstone_seconds > 0:
            raise ValueError(f"tombstone_seconds must be a number of seconds > 0, "
                             f"got {self.tombstone_seconds!r}")
        if not isinstance(self.edge_absence_seconds, (int, float)) or isinstance(
            self.edge_absence_seconds, bool
        ) or not self.edge_absence_seconds >= 0:
            raise ValueError(f"edge_absence_seconds must be a number of seconds >= 0, "
                             f"got {self.edge_absence_seconds!r}")
        if not isinstance(self.refresh_timeout, (int, float)) or isinstance(
            self.refresh_timeout, bool
        ) or not self.refresh_timeout > 0:
            raise ValueError(f"refresh_timeout must be a number of seconds > 0, "
                             f"got {self.refresh_timeout!r}")
        if not isinstance(self.refresh_jitter, (int, float)) or not 0 <= self.refresh_jitter < 1:
            raise ValueError(f"refresh_jitter must be a fraction in [0, 1), "
                             f"got {self.refresh_jitter!r}")

    @classmethod
    def coerce(cls: type[T], opts: SessionStoreOptions | Mapping[str, Any] | None) -> T:
        """Accept an options object, a dict (unknown names are an error) or None."""
        if opts is None:
            return cls()
        if isinstance(opts, cls):
            return opts
        if isinstance(opts, SessionStoreOptions):
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in vars(opts).items() if k in known})
        if isinstance(opts, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(opts) - known)
            if unknown:
                raise ValueError(f"unknown store option(s): {', '.join(map(str, unknown))}; "
                                 f"known: {', '.join(sorted(known))}")
            return cls(**opts)
        raise TypeError(f"opts must be {cls.__name__}, a dict or None, not {type(opts).__name__}")


@dataclass(frozen=True)
class _ClientTimeoutOptions(SessionStoreOptions):
    """A networked backend's client timeouts, checked in one place for memcached and Redis."""

    connect_timeout: float = _opt(0.5, "seconds per connection attempt", "0.5 s")
    timeout: float = _opt(0.5, "seconds per read or write on an open connection", "0.5 s")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("connect_timeout", "timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")


@dataclass(frozen=True)
class MemcacheSessionStoreOptions(_ClientTimeoutOptions):
    """Adds memcached client timeouts: every call is bounded, so a hung server cannot stall."""


@dataclass(frozen=True)
class RedisSessionStoreOptions(_ClientTimeoutOptions):
    """Redis and Valkey: redis-py's connect and socket timeouts bound every call."""

    # redeclared only for its help text: redis-py bounds a whole command, not each read
    timeout: float = _opt(0.5, "seconds per command on an open connection", "0.5 s")


@dataclass(frozen=True)
class FileSessionStoreOptions(SessionStoreOptions):
    """The embedded store needs nothing beyond the shared options."""


def validate_key(key: str) -> str:
    """Raise ``ValueError`` unless ``key`` is a valid memcache key (also used for file names)."""
    if _KEY_UNSAFE.search(key):
        raise ValueError(f"store key {key!r} contains spaces or control characters "
                         "(or non-ASCII ones: memcached keys are ASCII)")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"store key {key[:40]!r}... is longer than {MAX_KEY_BYTES} bytes")
    return key


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
