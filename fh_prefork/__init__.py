"""fh-prefork: FeatureHub feature flags that work inside prefork servers.

In application code::

    import fh_prefork
    if fh_prefork.context().user_key(user_id).feature("NEW_CHECKOUT").is_enabled: ...

Wire the server with :mod:`fh_prefork.gunicorn` or :mod:`fh_prefork.uwsgi`, or
call :func:`start_worker` / :func:`stop_worker` from any other prefork host.
"""

from .listener import EDGE_SOURCE, ListeningRepository, RawUpdateFeatureListener
from .runtime import config, configure, context, start_worker, status, stop_worker
from .settings import Settings, SettingsError
from .store import (
    FileSessionStore,
    FileSessionStoreOptions,
    MemcacheSessionStore,
    MemcacheSessionStoreOptions,
    RedisSessionStore,
    RedisSessionStoreOptions,
    SessionStore,
    SessionStoreOptions,
)

__version__ = "0.1.0"

__all__ = [
    "EDGE_SOURCE",
    "FileSessionStore",
    "FileSessionStoreOptions",
    "ListeningRepository",
    "MemcacheSessionStore",
    "MemcacheSessionStoreOptions",
    "RawUpdateFeatureListener",
    "RedisSessionStore",
    "RedisSessionStoreOptions",
    "SessionStore",
    "SessionStoreOptions",
    "Settings",
    "SettingsError",
    "config",
    "configure",
    "context",
    "start_worker",
    "status",
    "stop_worker",
]
