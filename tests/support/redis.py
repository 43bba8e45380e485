"""Redis servers for tests: the package's launchers, plus a restart on the same port."""

from __future__ import annotations

from typing import Any

from fh_prefork.testing.redis import RedisCluster, RedisServer

from .procs import port_open, wait_for

__all__ = ["Redis", "RedisCluster", "value_of"]


def value_of(client: Any, key: str) -> bytes:
    """A key's stored bytes, asserted present (a client that decodes would give str: not ours)."""
    value = client.get(key)
    assert isinstance(value, bytes), f"{key}: {value!r}"
    return value


class Redis(RedisServer):
    def restart(self) -> None:
        """Stop and start empty on the same port (what a Redis restart without persistence is)."""
        self.stop()
        wait_for(lambda: not port_open(self.port), 5, what="redis port to close")
        self.start()
