"""ListeningRepository: validates what arrives, tells listeners its source, survives readers."""

from __future__ import annotations

import threading
from typing import Any

from fh_prefork.listener import EDGE_SOURCE, ListeningRepository, RawUpdateFeatureListener
from tests.support.stores import feat


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


def test_a_deleted_version_never_comes_back_but_a_later_one_does() -> None:
    repo = ListeningRepository()
    repo.notify("features", [feat("A", 3), feat("B")])
    repo.notify("delete_feature", {"id": "id-A", "key": "A", "version": 3})
    repo.notify("feature", feat("A", 3))            # a lagging stream re-sends it
    repo.notify("feature", feat("A", 2), source="memcache-store")
    assert not repo.feature("A").exists
    assert repo.tombstones()["id-A"].version == 3
    repo.notify("feature", feat("A", 4))
    assert repo.feature("A").get_version == 4


def test_a_delete_without_a_version_takes_the_held_one() -> None:
    repo = ListeningRepository()
    repo.notify("feature", feat("A", 5))
    repo.notify("delete_feature", {"key": "A"})
    assert repo.tombstones()["id-A"].version == 5 and not repo.feature("A").exists


def test_a_stale_delete_does_not_remove_a_newer_state() -> None:
    repo = ListeningRepository()
    repo.notify("feature", feat("A", 5))
    repo.notify("delete_feature", {"id": "id-A", "key": "A", "version": 4})
    assert repo.feature("A").get_version == 5


def test_an_edge_full_list_deletes_what_it_lacks() -> None:
    repo, rec = ListeningRepository(), Recorder()
    repo.absence_seconds = 0.0                      # one list is enough: judged at once
    repo.notify("features", [feat("A"), feat("B"), feat("C")])
    repo.register_raw_update_listener(rec)
    repo.notify("features", [feat("A"), feat("C", 2)])
    assert not repo.feature("B").exists and repo.feature("C").get_version == 2
    assert ("delete", "B", EDGE_SOURCE) in rec.calls
    assert "id-B" in repo.tombstones()
    # a store's list is not the environment: it never deletes by absence
    repo.notify("features", [feat("A")], source="memcache-store")
    assert repo.feature("C").exists


def test_a_feature_is_deleted_only_when_full_lists_keep_lacking_it_past_the_grace() -> None:
    repo = ListeningRepository()
    now = [1000.0]
    repo._clock = lambda: now[0]                      # the grace is stepped over, not slept
    repo.absence_seconds = 0.3
    repo.notify("features", [feat("A"), feat("B")])
    repo.notify("features", [feat("A")])              # one list lacking B: the clock starts
    assert repo.feature("B").exists
    now[0] += 0.35
    repo.notify("feature", feat("B"))                 # Edge sent B: it exists, clock reset
    repo.notify("features", [feat("A")])
    assert repo.feature("B").exists and "id-B" not in repo.tombstones()
    now[0] += 0.29
    repo.notify("features", [feat("A")])              # inside the grace: still held
    assert repo.feature("B").exists
    now[0] += 0.02
    repo.notify("features", [feat("A")])              # still lacking it past the grace
    assert not repo.feature("B").exists and "id-B" in repo.tombstones()
    assert [f["key"] for f in repo.feature_states()] == ["A"]


def test_a_recreated_feature_with_a_new_id_replaces_the_old_one() -> None:
    repo = ListeningRepository()
    repo.notify("feature", feat("A", 7))
    new = {**feat("A", 1), "id": "id-A-2"}
    repo.notify("feature", new, source="memcache-store")  # no sign yet the old one is gone
    assert repo.feature("A").get_version == 7
    repo.notify("feature", new)                            # Edge says so
    assert repo.feature("A").get_version == 1
    assert repo.feature_states()[0]["id"] == "id-A-2"
    assert repo.tombstones()["id-A"].version == 7, "the replaced id is deleted everywhere"


def test_one_state_the_sdk_rejects_costs_only_itself() -> None:
    repo = ListeningRepository()
    bad = {**feat("BAD"), "strategies": 5}
    odd = {**feat("ODD"), "strategies": [{"id": "s", "value": False, "attributes": [
        {"conditional": "NOPE", "fieldName": "x", "type": "STRING", "values": ["a"]}]}]}
    repo.notify("features", [feat("A"), bad, odd, feat("B")])
    assert repo.known_features() == 2
    assert repo.feature("A").exists and repo.feature("B").exists
    assert not repo.feature("BAD").exists and not repo.feature("ODD").exists
