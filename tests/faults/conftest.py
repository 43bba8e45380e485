"""Fault suite: real workers, real memcached, the local Edge; one file per fault family."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.conftest import edge, server_env, start_cluster  # noqa: F401  (fixtures)
from tests.support.memcached import Memcached


@pytest.fixture
def own_memcached() -> Iterator[Memcached]:
    """A memcached this test may stop, restart or starve without disturbing others."""
    server = Memcached(item_size="8m").start()
    try:
        yield server
    finally:
        server.stop()
