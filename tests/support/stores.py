"""For store tests: feature states, a config's repository, and a store's backend reached
without touching the store thread's own client."""

from __future__ import annotations

from typing import Any

from pymemcache.client.base import Client

from fh_prefork.listener import ListeningRepository
from fh_prefork.store import SessionStore
from fh_prefork.store.file import FileBackend
from fh_prefork.store.memcache import MemcacheBackend
from fh_prefork.store.redis import RedisBackend
from fh_prefork.testing.memory import MemoryBackend


def feat(key: str, version: object = 1, value: object = True, fid: str | None = None
         ) -> dict[str, Any]:
    """A feature state as Edge sends it: a flag, or a string feature for a string ``value``.

    The one builder of the suite (id ``id-<key>`` unless ``fid``); ``version`` is not
    checked, so a test can hand the listener a junk one.
    """
    kind = "BOOLEAN" if isinstance(value, bool) else "STRING"
    return {"id": fid or f"id-{key}", "key": key, "l": False, "version": version,
            "type": kind, "value": value, "strategies": []}


def repo_of(config: Any) -> ListeningRepository:
    """The repository of a config a store was built on (the store made it a listening one)."""
    repo = config.repository()
    assert isinstance(repo, ListeningRepository)
    return repo


def write_and_close(store: SessionStore, config: Any, event: str, payload: Any) -> None:
    """The store's repository hears ``event``; the store writes it, then closes (also when
    the write fails), so the test can read what it left behind."""
    try:
        repo_of(config).notify(event, payload)
        assert store.flush(2)
    finally:
        store.close()


def peek(store: SessionStore) -> Any:
    """A second backend on the same place: the store's own client belongs to its thread."""
    backend: Any = store._backend
    if isinstance(backend, MemcacheBackend):
        return MemcacheBackend(Client(backend._client.server, connect_timeout=1, timeout=1,
                                      default_noreply=False),
                               backend.data_key, "peek")
    if isinstance(backend, RedisBackend):
        client = backend._connect()
        return RedisBackend(client.__class__(connection_pool=client.connection_pool)
                            if not backend.cluster else client,
                            backend.data_key, "peek", backend.cluster)
    if isinstance(backend, MemoryBackend):
        return MemoryBackend(backend.medium, backend.data_key, "peek")
    return FileBackend(backend.directory, backend.path.name.removesuffix(".json"))
