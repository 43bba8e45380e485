"""Shared feature stores: one core (``core.py``), one small backend per medium."""

from collections.abc import Mapping
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from .backend import Snapshot, StoreBackend, StoreUnavailable
from .core import SessionStore, StoreCounters
from .file import FileSessionStore
from .memcache import MemcacheSessionStore
from .options import (
    FileSessionStoreOptions,
    MemcacheSessionStoreOptions,
    RedisSessionStoreOptions,
    SessionStoreOptions,
)
from .redis import RedisSessionStore, is_redis_url

__all__ = [
    "FileSessionStore",
    "FileSessionStoreOptions",
    "MemcacheSessionStore",
    "MemcacheSessionStoreOptions",
    "RedisSessionStore",
    "RedisSessionStoreOptions",
    "SessionStore",
    "SessionStoreOptions",
    "Snapshot",
    "StoreBackend",
    "StoreCounters",
    "StoreUnavailable",
    "open_store",
]



def open_store(url: str, config: FeatureHubConfig,
               opts: SessionStoreOptions | Mapping[str, Any] | None = None) -> SessionStore | None:
    """The store a ``FH_PREFORK_STORE`` URL names: ``memcache://``, ``redis://``, ``rediss://``,
    ``redis+cluster://``, ``file://`` or ``none``."""
    if url == "none":
        return None
    if url.startswith("memcache://"):
        return MemcacheSessionStore(url, config, MemcacheSessionStoreOptions.coerce(opts))
    if is_redis_url(url):
        return RedisSessionStore(url, config, RedisSessionStoreOptions.coerce(opts))
    if url.startswith("file://"):
        return FileSessionStore(url, config, FileSessionStoreOptions.coerce(opts))
    raise ValueError(f"store URL {url.split('://', 1)[0]!r}: expected "
                     "memcache://host:port[,host:port], redis://..., rediss://..., "
                     "redis+cluster://host:port, file:///path or none")
