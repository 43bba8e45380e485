"""The real-server fixtures of tests/servers, shared by the hardening tests."""

from tests.servers.conftest import edge, server_env, start_cluster  # noqa: F401
