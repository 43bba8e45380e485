"""fh-prefork: FeatureHub feature flags that work inside prefork servers.

Store classes are importable directly; the per-worker runtime (``config()``,
``context()``, ``status()``...) lives in :mod:`fh_prefork.runtime`.
"""

from .listener import EDGE_SOURCE, ListeningRepository, RawUpdateFeatureListener
from .store import (
    FileSessionStore,
    FileSessionStoreOptions,
    MemcacheSessionStore,
    MemcacheSessionStoreOptions,
    SessionStore,
    SessionStoreOptions,
)

__all__ = [
    "EDGE_SOURCE",
    "FileSessionStore",
    "FileSessionStoreOptions",
    "ListeningRepository",
    "MemcacheSessionStore",
    "MemcacheSessionStoreOptions",
    "RawUpdateFeatureListener",
    "SessionStore",
    "SessionStoreOptions",
]
