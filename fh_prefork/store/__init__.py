"""Shared feature stores: one core (``core.py``), one small backend per medium."""

from collections.abc import Mapping
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from .backend import Snapshot, StoreBackend, StoreUnavailable
from .core import SessionStore, StoreCounters
from .file import FileSessionStore
from .memcache import MemcacheSessionStore
from .options import FileSessionStoreOptions, MemcacheSessionStoreOptions, SessionStoreOptions

__all__ = [
    "FileSessionStore",
    "FileSessionStoreOptions",
    "MemcacheSessionStore",
    "MemcacheSessionStoreOptions",
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
    """The store a ``FH_PREFORK_STORE`` URL names: ``memcache://``, ``file://`` or ``none``."""
    if url == "none":
        return None
    if url.startswith("memcache://"):
        return MemcacheSessionStore(url, config, MemcacheSessionStoreOptions.coerce(opts))
    if url.startswith("file://"):
        return FileSessionStore(url, config, FileSessionStoreOptions.coerce(opts))
    raise ValueError(f"store URL {url!r}: expected memcache://host:port[,host:port], "
                     "file:///path or none")
