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



def open_backend(url: str, data_key: str, timeout: float = 1.0) -> StoreBackend:
    """The backend a ``FH_PREFORK_STORE`` URL names, for reading tools (``fh-prefork status``).

    The same code that owns each layout reads it: nothing is created, and an
    embedded store's missing folder raises ``FileNotFoundError``. Call only
    ``read()``, ``change_token()``, ``lease_read()`` and ``close()`` on it.
    """
    if url.startswith("memcache://"):
        from .memcache import MemcacheBackend, make_client, parse_url

        servers, tls = parse_url(url)
        options = MemcacheSessionStoreOptions(connect_timeout=timeout, timeout=timeout)
        return MemcacheBackend(make_client(servers, options, tls), data_key,
                               f"{url.split('?', 1)[0]} key {data_key}")
    if is_redis_url(url):
        from .redis import RedisBackend, describe_url, split_url
        from .redis import make_client as make_redis_client

        options_r = RedisSessionStoreOptions(connect_timeout=timeout, timeout=timeout)
        return RedisBackend(lambda: make_redis_client(url, options_r), data_key,
                            f"{describe_url(url)} key {data_key}", split_url(url)[1])
    if url.startswith("file://"):
        from .file import FileBackend, parse_file_url

        return FileBackend(parse_file_url(url), data_key, create=False)
    raise ValueError(f"store URL {url.split('://', 1)[0]!r}: nothing to read")


def open_store(url: str, config: FeatureHubConfig,
               opts: SessionStoreOptions | Mapping[str, Any] | None = None, *,
               start: bool = True) -> SessionStore | None:
    """The store a ``FH_PREFORK_STORE`` URL names: ``memcache://``, ``redis://``, ``rediss://``,
    ``redis+cluster://``, ``file://`` or ``none``. ``start=False``: replay once and close
    (see :class:`SessionStore`)."""
    if url == "none":
        return None
    if url.startswith("memcache://"):
        return MemcacheSessionStore(url, config, MemcacheSessionStoreOptions.coerce(opts),
                                    start=start)
    if is_redis_url(url):
        return RedisSessionStore(url, config, RedisSessionStoreOptions.coerce(opts),
                                 start=start)
    if url.startswith("file://"):
        return FileSessionStore(url, config, FileSessionStoreOptions.coerce(opts),
                                start=start)
    raise ValueError(f"store URL {url.split('://', 1)[0]!r}: expected "
                     "memcache://host:port[,host:port], redis://..., rediss://..., "
                     "redis+cluster://host:port, file:///path or none")
