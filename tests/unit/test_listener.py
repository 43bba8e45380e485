"""ListeningRepository: validates what arrives, tells listeners its source, survives readers."""

from __future__ import annotations

import threading
from typing import Any

from fh_prefork.listener import EDGE_SOURCE, ListeningRepository, RawUpdateFeatureListener


def feat(key: str, version: Any = 1) -> dict[str, Any]:
    return {"id": f"id-{key}", "key": key, "l": False, "version": version, "type": "BOOLEAN",
            "value": True, "strategies": []}


class Recorder(RawUpdateFeatureListener):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str]] = []

    def process_updates(self, features: list[dict[str, Any]], source: str) -> None:
        self.calls.append(("features", [f["key"] for f in features], source))

    def process_update(self, feature: dict[str, Any], source: str) -> None:
        self.calls.append(("feature", feature["key"], source))

    def delete_feature(self, feature: dict[str, Any], source: str) -> None:
        self.calls.append(("delete", feature["key"], source))


def test_listeners_hear_every_update_with_its_source() -> None:
    repo, rec = ListeningRepository(), Recorder()
    repo.register_raw_update_listener(rec)
    repo.notify("features", [feat("A"), feat("B")])
    repo.notify("feature", feat("A", 2), source="memcache-store")
    repo.notify("delete_feature", {"id": "id-B", "key": "B"})
    assert rec.calls == [("features", ["A", "B"], EDGE_SOURCE),
                         ("feature", "A", "memcache-store"), ("delete", "B", EDGE_SOURCE)]
    assert repo.feature("A").get_version == 2 and not repo.feature("B").exists


def test_malformed_states_are_dropped_before_the_sdk_sees_them() -> None:
    repo, rec = ListeningRepository(), Recorder()
    repo.register_raw_update_listener(rec)
    repo.notify("features", [feat("A"), feat("B", "7"), {"key": "C"}, "junk"])
    repo.notify("feature", feat("D", None))   # the SDK would raise TypeError on this
    repo.notify("features", {"not": "a list"})
    assert rec.calls == [("features", ["A"], EDGE_SOURCE)]
    assert repo.feature("A").exists and not repo.feature("B").exists


def test_a_failing_listener_does_not_stop_updates() -> None:
    class Broken(RawUpdateFeatureListener):
        def process_update(self, feature: dict[str, Any], source: str) -> None:
            raise RuntimeError("boom")

    repo, rec = ListeningRepository(), Recorder()
    repo.register_raw_update_listener(Broken())
    repo.register_raw_update_listener(rec)
    repo.notify("feature", feat("A"))
    assert repo.feature("A").exists and rec.calls == [("feature", "A", EDGE_SOURCE)]


def test_snapshots_survive_requests_adding_unknown_keys() -> None:
    """Requests add holders for unknown keys without a lock while the store thread snapshots."""
    repo = ListeningRepository()
    repo.notify("features", [feat(f"K{i}") for i in range(200)])
    stop = threading.Event()

    def requests() -> None:
        for i in range(50_000):
            if stop.is_set():
                return
            repo.feature(f"unknown-{i}")

    thread = threading.Thread(target=requests)
    thread.start()
    try:
        while thread.is_alive():
            assert len(repo.feature_states()) == 200
            assert repo.known_features() == 200
    finally:
        stop.set()
        thread.join()
