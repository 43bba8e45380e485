"""A tiny WSGI app that reports which flags this worker serves: for the demo, bench and tests.

``GET /flags?key=A&key=B[&user=U]`` -> ``{"pid", "flags": {key: {"value", "version", "exists"}}}``
(with ``user``, evaluated for that user key: rollout strategies apply)
``GET /state`` -> ``{"pid", "features": {key: {"id", "version", "value"}}}``: every
feature this worker holds (deleted ones are absent), for whole-state checks.
``GET /status`` -> ``fh_prefork.status()``; ``GET /ping`` -> ``ok``.
Set ``PROBE_CONFIG_AT_IMPORT=1`` to ask for flags while the module is imported
(in a prefork master with ``--preload`` or uWSGI without ``lazy-apps``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import fh_prefork
import fh_prefork.uwsgi  # noqa: F401  # wires uWSGI workers; does nothing elsewhere

if os.environ.get("PROBE_CONFIG_AT_IMPORT") == "1":
    IMPORT_TIME_CONFIG = fh_prefork.config()


def flags(keys: Iterable[str], user: str | None = None) -> dict[str, Any]:
    ctx = fh_prefork.context()
    if user is not None:
        ctx = ctx.user_key(user)
    out = {}
    for key in keys:
        state = ctx.feature(key)
        out[key] = {"value": state.get_value, "version": state.get_version,
                    "exists": state.exists}
    return {"pid": os.getpid(), "flags": out}


def held_state() -> dict[str, Any]:
    """Every feature state this worker's repository holds, by key."""
    repo = fh_prefork.config().repository()
    out = {}
    for state in repo.feature_states():
        out[state["key"]] = {"id": state.get("id"), "version": state.get("version"),
                             "value": state.get("value")}
    return {"pid": os.getpid(), "features": out}


def application(environ: dict[str, Any],
                start_response: Callable[[str, list[tuple[str, str]]], Any]) -> list[bytes]:
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/flags":
        body: Any = flags(query.get("key", []), (query.get("user") or [None])[0])
    elif path == "/state":
        body = held_state()
    elif path == "/status":
        body = fh_prefork.status()
    elif path == "/ping":
        body = "ok"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    data = json.dumps(body, default=str).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data))), ("Connection", "close")])
    return [data]
