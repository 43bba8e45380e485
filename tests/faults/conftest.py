"""Fault suite: real workers, real memcached, the local Edge; one file per fault family."""

from __future__ import annotations

from tests.servers.conftest import edge, server_env, start_cluster  # noqa: F401  (fixtures)
