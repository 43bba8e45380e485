"""A WSGI app with no fh_prefork at all: the baseline a gevent worker's exit time is compared to."""

from collections.abc import Callable
from typing import Any


def application(environ: dict[str, Any],
                start_response: Callable[[str, list[tuple[str, str]]], Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"), ("Connection", "close")])
    return [b'"ok"']
