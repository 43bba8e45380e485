"""A WSGI app that reads flags only through OpenFeature, for the real-server tests.

``GET /eval?type=boolean&key=K&default=false&tk=user&attr.country=new_zealand`` ->
the OpenFeature evaluation details, with the answering worker's pid and provider status.
``GET /events`` -> every provider event this process's handlers saw (pid, event, flags).
``GET /ping`` -> ``ok`` (the cluster harness waits for it).

The provider is set when the module is imported: in each worker, or in the master with
``--preload`` and under uWSGI without ``lazy-apps``, which is what the fork tests need.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

import fh_prefork.uwsgi  # noqa: F401  # wires uWSGI workers; does nothing elsewhere
from fh_prefork.openfeature import FeatureHubProvider
from fh_prefork.testing.json_wsgi import Query, json_app

api.set_provider(FeatureHubProvider(ready_timeout=float(os.environ.get("OF_READY_TIMEOUT", "5")),
                                    watch_interval=0.2))
client = api.get_client()

_lock = threading.Lock()
_events: list[dict[str, Any]] = []


def _recorder(event: ProviderEvent) -> Callable[[EventDetails], None]:
    def record(details: EventDetails) -> None:
        with _lock:
            _events.append({"pid": os.getpid(), "event": event.value, "at": time.time(),
                            "flags_changed": details.flags_changed, "message": details.message,
                            "error_code": details.error_code})
    return record


for _event in ProviderEvent:
    client.add_handler(_event, _recorder(_event))


def _default(kind: str, text: str) -> Any:
    if kind == "boolean":
        return text == "true"
    if kind == "integer":
        return int(text or 0)
    if kind == "float":
        return float(text or 0)
    if kind == "object":
        return json.loads(text or "{}")
    return text


def evaluate(query: Query) -> dict[str, Any]:
    kind = query.get("type", ["boolean"])[0]
    key = query["key"][0]
    default = _default(kind, query.get("default", [""])[0])
    attributes: dict[str, Any] = {name[5:]: values[0] for name, values in query.items()
                                  if name.startswith("attr.")}
    context = EvaluationContext(query.get("tk", [None])[0], attributes)
    getter = getattr(client, f"get_{kind}_details")
    details = getter(key, default, context)
    return {"pid": os.getpid(), "status": client.get_provider_status().value,
            "value": details.value, "reason": details.reason, "variant": details.variant,
            "error_code": details.error_code, "error_message": details.error_message,
            "flag_metadata": dict(details.flag_metadata)}


def events(query: Query) -> dict[str, Any]:
    with _lock:
        mine = [e for e in _events if e["pid"] == os.getpid()]
    return {"pid": os.getpid(), "status": client.get_provider_status().value, "events": mine}


application = json_app({"/eval": evaluate, "/events": events})
