"""The probe app on the plain FeatureHub SDK, for comparison in ``fh-prefork bench``.

Each worker builds its own ``FeatureHubConfig`` and starts the SDK's streaming
client after the fork (``plain_gunicorn_conf.post_fork``): what an application
without fh_prefork does. Same endpoints as :mod:`fh_prefork.testing.probe_app`.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from featurehub_sdk.featurehub_config import FeatureHubConfig

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


def application(environ: dict[str, Any],
                start_response: Callable[[str, list[tuple[str, str]]], Any]) -> list[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/ping":
        body: Any = "ok"
    elif path == "/flags":
        ctx = start().new_context()
        keys = parse_qs(environ.get("QUERY_STRING", "")).get("key", [])
        body = {"pid": os.getpid(), "flags": {
            k: {"value": ctx.feature(k).get_value, "version": ctx.feature(k).get_version,
                "exists": ctx.feature(k).exists} for k in keys}}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data))), ("Connection", "close")])
    return [data]
