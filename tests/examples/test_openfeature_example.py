"""The OpenFeature example under gunicorn: its flag is read through OpenFeature only."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature

from .conftest import BIN, EXAMPLES, Server


def _serves(value: Any, version: int) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and body.get("value") == value \
        and body.get("version") == version


def test_openfeature_example_under_gunicorn(start_server: Callable[..., Server],
                                            edge: EdgeSimulator) -> None:
    for module in ("flask", "openfeature"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install --group dev -e .)")
    server = start_server([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"],
                          cwd=EXAMPLES / "openfeature")
    body = server.serving("/?user=alice&country=new_zealand", _serves(True, 7))
    assert body["flag"] == "NEW_CHECKOUT" and body["reason"] == "STATIC"
    assert body["error"] is None and body["pid"] != server.proc.pid  # a worker answered
    health = server.serving("/health", lambda b: isinstance(b, dict) and b.get("ok") is True)
    assert health["status"] == "READY"
    edge.push_feature(make_feature("NEW_CHECKOUT", False, 8))  # a change reaches the workers
    changed = server.serving("/", lambda b: _serves(False, 8)(b) and b.get("changes", 0) >= 1)
    assert changed["enabled"] is False
