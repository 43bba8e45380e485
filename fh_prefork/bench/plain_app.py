"""The probe app on the plain FeatureHub SDK, for comparison in ``fh-prefork bench``.

Each worker builds its own ``FeatureHubConfig`` and starts the SDK's streaming
client after the fork (``plain_gunicorn_conf.post_fork``): what an application
without fh_prefork does. Same endpoints as :mod:`fh_prefork.testing.probe_app`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from ..testing.json_wsgi import Query, json_app

_config: FeatureHubConfig | None = None
_pid: int | None = None
_lock = threading.Lock()


def start() -> FeatureHubConfig:
    global _config, _pid
    with _lock:
        if _config is None or _pid != os.getpid():
            config = FeatureHubConfig(os.environ["FEATUREHUB_EDGE_URL"],
                                      [os.environ["FEATUREHUB_API_KEY"]])
            asyncio.run(config.init())  # starts the SDK's streaming thread
            _config, _pid = config, os.getpid()
        return _config


def flags(query: Query) -> dict[str, Any]:
    ctx = start().new_context()
    return {"pid": os.getpid(), "flags": {
        k: {"value": ctx.feature(k).get_value, "version": ctx.feature(k).get_version,
            "exists": ctx.feature(k).exists} for k in query.get("key", [])}}


application = json_app({"/flags": flags})
