"""The plumbing of the test apps: route a path to a function, answer its result as JSON.

Shared by the probe app, the plain-SDK bench app and the OpenFeature test app so
they all answer alike, ``/ping`` included (what :class:`~.cluster.Cluster` waits
for). Imports nothing of the fh_prefork runtime: the plain-SDK app must stay plain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

#: a parsed query string, as ``urllib.parse.parse_qs`` gives it
Query = dict[str, list[str]]
#: what one path answers, given the query; the result is sent as JSON
Route = Callable[[Query], Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], list[bytes]]


def json_app(routes: Mapping[str, Route]) -> WsgiApp:
    """A WSGI app answering each path of ``routes`` (and ``/ping``) as JSON, others with 404."""
    table: dict[str, Route] = {"/ping": lambda query: "ok", **routes}

    def application(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        route = table.get(environ.get("PATH_INFO", "/"))
        if route is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        body = route(parse_qs(environ.get("QUERY_STRING", "")))
        data = json.dumps(body, default=str).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data))), ("Connection", "close")])
        return [data]

    return application
