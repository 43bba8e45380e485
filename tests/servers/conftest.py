"""Real prefork servers against a real memcached and the local Edge simulator.

The fixtures (``edge``, ``server_env``, ``start_cluster``) are the suite's plugin's
(tests/support/fixtures.py) and reach every folder without an import. Their names are
re-exported here only for modules written before the plugin, which import them from this
path; new modules import nothing.
"""

from __future__ import annotations

from tests.support.fixtures import REFRESH, default_store_env, edge, server_env, start_cluster
from tests.support.fixtures import SERVER_API_KEY as API_KEY

__all__ = ["API_KEY", "REFRESH", "default_store_env", "edge", "server_env", "start_cluster"]
