"""OpenFeature provider tests: the real openfeature-sdk against the Edge simulator."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openfeature", reason="openfeature-sdk is not installed "
                    "(pip install --group dev -e .)")

from openfeature import api
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ProviderNotReadyError

from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.edge import serve_edge
from tests.support.runtime import isolated_runtime

API_KEY = "portfolio/env-of/client*secret"
PROVIDER_NAME = "fh-prefork FeatureHub"


def feature(key: str, value: Any, version: int = 1, type: str = "BOOLEAN",
            strategies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    state = make_feature(key, value, version, type)
    state["strategies"] = strategies or []
    return state


def attribute(field: str, conditional: str, values: list[Any],
              type: str = "STRING") -> dict[str, Any]:
    return {"conditional": conditional, "fieldName": field, "values": values, "type": type}


#: One feature of every type, a null one, and one targeted by every kind of attribute.
FEATURES = [
    feature("BOOL_FLAG", True, 3),
    feature("STR_FLAG", "blue", 2, "STRING"),
    feature("INT_FLAG", 42, 1, "NUMBER"),
    feature("FLOAT_FLAG", 2.5, 1, "NUMBER"),
    feature("OBJ_FLAG", '{"a": 1, "b": [1, 2]}', 1, "JSON"),
    feature("LIST_FLAG", "[1, 2, 3]", 1, "JSON"),
    feature("SCALAR_JSON", "5", 1, "JSON"),
    feature("NULL_STR", None, 1, "STRING"),
    feature("TARGETED", "default", 4, "STRING", [
        {"id": "s-user", "name": "one-user", "value": "mine",
         "attributes": [attribute("userkey", "EQUALS", ["user-7"])]},
        {"id": "s-nz", "name": "kiwis", "value": "kiwi",
         "attributes": [attribute("country", "EQUALS", ["new_zealand"])]},
        {"id": "s-ios", "name": "ios-2", "value": "ios",
         "attributes": [attribute("platform", "EQUALS", ["ios"]),
                        attribute("version", "GREATER_EQUALS", ["2.0.0"], "SEMANTIC_VERSION")]},
        {"id": "s-mobile", "name": "mobile", "value": "small",
         "attributes": [attribute("device", "EQUALS", ["mobile"])]},
        {"id": "s-gold", "name": "gold-plan", "value": "gold",
         "attributes": [attribute("plan", "EQUALS", ["gold"]),
                        attribute("seats", "GREATER", [10], "NUMBER"),
                        attribute("beta", "EQUALS", [True], "BOOLEAN")]},
    ]),
    feature("ROLLOUT", False, 2, "BOOLEAN", [
        {"id": "s-half", "name": "half", "value": True, "percentage": 500000},
    ]),
    feature("SHARED", False, 1, "BOOLEAN", [   # four strategies, one value
        {"id": f"s-{c}", "name": c, "value": True,
         "attributes": [attribute("country", "EQUALS", [c])]}
        for c in ("australia", "united_kingdom", "new_zealand", "ireland")]),
    feature("BY_IP", "outside", 1, "STRING", [
        {"id": "s-office", "name": "office", "value": "office",
         "attributes": [attribute("ip", "INCLUDES", ["10.0.0.0/8"], "IP_ADDRESS")]},
    ]),
]


@pytest.fixture
def edge() -> Iterator[EdgeSimulator]:
    yield from serve_edge(FEATURES, keepalive_interval=0.5)


@pytest.fixture(autouse=True)
def fresh_openfeature(edge: EdgeSimulator, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh fh_prefork runtime and OpenFeature API per test, torn down in order."""
    with isolated_runtime(monkeypatch, edge.url, API_KEY, tmp_path):
        yield
        api.shutdown()         # shuts the provider down (synchronously), drops handlers


def set_and_wait(provider: Any) -> None:
    """``api.set_provider_and_wait`` (openfeature-sdk 0.10); older releases initialise in
    ``set_provider`` itself and report a failed initialize as an event, not an exception."""
    wait = getattr(api, "set_provider_and_wait", None)
    if wait is not None:
        wait(provider)
        return
    api.set_provider(provider)
    status = api.get_client().get_provider_status().value
    if status != "READY":
        raise ProviderNotReadyError(f"provider status {status}")


class Events:
    """Provider events seen by handlers, waited for with a bound."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []

    def handler(self, event: ProviderEvent) -> Any:
        def record(details: EventDetails) -> None:
            if details.provider_name != PROVIDER_NAME:
                return  # the no-op provider's READY, run at once for a handler added early
            with self._cond:
                self.seen.append((event, details))
                self._cond.notify_all()
        return record

    def listen(self, *events: ProviderEvent) -> Events:
        for event in events or tuple(ProviderEvent):
            api.add_handler(event, self.handler(event))
        return self

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        with self._cond:
            return [d for e, d in self.seen if e == event]

    def wait(self, event: ProviderEvent, timeout: float = 10.0, count: int = 1,
             flag: str | None = None) -> list[EventDetails]:
        def matching() -> list[EventDetails]:
            return [d for d in self.of(event)
                    if flag is None or flag in (d.flags_changed or [])]
        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout=timeout):
                raise AssertionError(f"no {count} x {event.value}"
                                     f"{f' for {flag}' if flag else ''} within {timeout} s; "
                                     f"seen: {[(e.value, d.flags_changed) for e, d in self.seen]}")
        return matching()


@pytest.fixture
def events() -> Events:
    return Events()
