"""An ASGI app for plain ``uvicorn --workers N``: no server hooks, so it starts fh_prefork in
its lifespan (each uvicorn worker is a spawned process that imports the app itself)."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import fh_prefork

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                fh_prefork.start_worker()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                fh_prefork.stop_worker()
                await send({"type": "lifespan.shutdown.complete"})
                return
    keys = parse_qs(scope.get("query_string", b"").decode()).get("key", [])
    ctx = fh_prefork.context()
    body: Any = {"pid": os.getpid(), "flags": {
        k: {"value": ctx.feature(k).get_value, "version": ctx.feature(k).get_version}
        for k in keys}}
    if scope["path"] == "/ping":
        body = "ok"
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})
