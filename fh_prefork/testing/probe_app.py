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

import os
from collections.abc import Iterable
from typing import Any

import fh_prefork
import fh_prefork.uwsgi  # wires uWSGI workers; does nothing elsewhere

from .json_wsgi import Query, json_app

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


def _flags_route(query: Query) -> dict[str, Any]:
    users = query.get("user")
    return flags(query.get("key", []), users[0] if users else None)


application = json_app({
    "/flags": _flags_route,
    "/state": lambda query: held_state(),
    "/status": lambda query: fh_prefork.status(),
})
