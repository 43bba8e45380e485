"""Each example starts under its real server and serves the flag the Edge simulator holds."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature

from .conftest import BIN, EXAMPLES, Server


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install --group dev -e .)")


def _serves(value: Any, version: int) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and body.get("value") == value \
        and body.get("version") == version


def _check(server: Server, edge: EdgeSimulator) -> None:
    body = server.serving("/", _serves(True, 7))
    assert body["flag"] == "NEW_CHECKOUT" and body["enabled"] is True
    assert isinstance(body["pid"], int) and body["pid"] != server.proc.pid  # a worker answered
    edge.push_feature(make_feature("NEW_CHECKOUT", False, 8))  # a change reaches the workers
    server.serving("/", _serves(False, 8))


def test_flask_under_gunicorn(start_server: Callable[..., Server], edge: EdgeSimulator) -> None:
    _needs("flask")
    server = start_server([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"],
                          cwd=EXAMPLES / "flask")
    _check(server, edge)
    health = server.serving("/health", lambda b: isinstance(b, dict) and b.get("ok") is True)
    assert health["features"] >= 1


def test_flask_under_uwsgi(start_server: Callable[..., Server], edge: EdgeSimulator) -> None:
    _needs("flask")
    if not (BIN / "uwsgi").exists():
        pytest.skip("uwsgi is not installed")
    server = start_server([str(BIN / "uwsgi"), "--ini", str(EXAMPLES / "uwsgi" / "uwsgi.ini"),
                           "--http-socket", "127.0.0.1:{port}", "--processes", "2",
                           "--disable-logging"], cwd=EXAMPLES / "uwsgi")
    _check(server, edge)


def test_django_under_gunicorn(start_server: Callable[..., Server],
                               edge: EdgeSimulator) -> None:
    _needs("django")
    server = start_server([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "mysite.wsgi"],
                          cwd=EXAMPLES / "django")
    _check(server, edge)


def test_fastapi_under_uvicorn_worker(start_server: Callable[..., Server],
                                      edge: EdgeSimulator) -> None:
    _needs("fastapi")
    _needs("uvicorn")
    server = start_server([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"],
                          cwd=EXAMPLES / "fastapi")
    _check(server, edge)
