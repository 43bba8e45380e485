"""ListeningRepository: validates what arrives, tells listeners its source, survives readers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fh_prefork.feature_shape import MAX_VERSION
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


def test_a_first_list_the_sdk_refuses_in_one_call_is_applied_state_by_state(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's first list goes to the SDK in one call; should that call raise, every
    state still gets its own call, and only the one the SDK refuses is lost."""
    from featurehub_sdk.featurehub_repository import FeatureHubRepository

    sdk_notify = FeatureHubRepository.notify
    calls: list[str] = []

    def picky(self: Any, status: str, data: Any) -> None:
        calls.append(status)
        if status == "features" or (status == "feature" and data["key"] == "B"):
            raise RuntimeError("refused")
        sdk_notify(self, status, data)

    monkeypatch.setattr(FeatureHubRepository, "notify", picky)
    repo, rec = ListeningRepository(), Recorder()
    repo.register_raw_update_listener(rec)
    repo.notify("features", [feat("A"), feat("B"), feat("C")])
    assert calls == ["features", "feature", "feature", "feature"]
    assert rec.calls == [("features", ["A", "C"], EDGE_SOURCE)]
    assert repo.feature("A").exists and repo.feature("C").exists and not repo.feature("B").exists
    calls.clear()
    repo.notify("features", [feat("A", 2), feat("D")])   # a key held: state by state
    assert calls == ["feature", "feature"]


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


def test_a_delete_without_a_version_removes_the_id_at_every_version() -> None:
    repo = ListeningRepository()
    repo.notify("feature", feat("A", 5))
    repo.notify("delete_feature", {"key": "A"})
    assert repo.tombstones()["id-A"].version == MAX_VERSION and not repo.feature("A").exists


def test_the_real_edge_delete_at_version_0_deletes_and_sticks() -> None:
    """Real Edge: ``delete_feature`` carries version 0 and no value (edge-common
    FeatureTransformerUtils.java; mr-eventing DbCacheSource.kt publishes a delete with no
    feature value). It deletes whatever is held, and no copy of that id comes back from the
    store or a lagging stream, at any version; a re-created feature (a new id) is accepted."""
    repo = ListeningRepository()
    repo.notify("features", [feat("A", 5), feat("B", 2)])
    repo.notify("delete_feature", {"id": "id-A", "key": "A", "type": "BOOLEAN", "l": False,
                                   "version": 0})
    assert not repo.feature("A").exists and repo.feature("B").exists
    for version in (5, 6, 1000):
        repo.notify("feature", feat("A", version), source="memcache-store")
        repo.notify("feature", feat("A", version))      # a lagging stream re-sends it
        assert not repo.feature("A").exists, version
    repo.notify("feature", {**feat("A", 1), "id": "id-A-new"})
    assert repo.feature("A").exists and repo.feature("A").get_version == 1


def test_a_retired_feature_deleted_at_its_version_comes_back_newer() -> None:
    """Real Edge: a retired feature is a ``delete_feature`` with its real version; unretired,
    it comes back as ``feature`` at a newer version (edge-full TimedBucketClientConnection;
    adks/e2e-sdk/features/flags.feature @retired)."""
    repo = ListeningRepository()
    repo.notify("features", [feat("A", 3)])
    repo.notify("delete_feature", feat("A", 3))
    assert not repo.feature("A").exists
    repo.notify("feature", feat("A", 3), source="memcache-store")
    assert not repo.feature("A").exists
    repo.notify("feature", feat("A", 4))
    assert repo.feature("A").get_version == 4


def test_a_stale_delete_does_not_remove_a_newer_state() -> None:
    repo = ListeningRepository()
    repo.notify("feature", feat("A", 5))
    repo.notify("delete_feature", {"id": "id-A", "key": "A", "version": 4})
    assert repo.feature("A").get_version == 5


def test_an_edge_full_list_removes_what_it_lacks_until_edge_names_it_again() -> None:
    repo, rec = ListeningRepository(), Recorder()
    repo.absence_seconds = 0.0                      # one list is enough: judged at once
    repo.notify("features", [feat("A"), feat("B"), feat("C")])
    repo.register_raw_update_listener(rec)
    repo.notify("features", [feat("A"), feat("C", 2)])
    assert not repo.feature("B").exists and repo.feature("C").get_version == 2
    assert ("delete", "B", EDGE_SOURCE) in rec.calls
    assert repo.tombstones()["id-B"].inferred, "an absence is a mark, not Edge's delete"
    # a stale copy (the store, a peer) is refused while the mark stands
    repo.notify("feature", feat("B"), source="memcache-store")
    assert not repo.feature("B").exists
    # a store's list is not the environment: it never removes by absence
    repo.notify("features", [feat("A")], source="memcache-store")
    assert repo.feature("C").exists
    # Edge names B again, at the very version it had: back at once, the mark lifted
    repo.notify("features", [feat("A"), feat("B"), feat("C", 2)])
    assert repo.feature("B").get_version == 1 and "id-B" not in repo.tombstones()


def test_an_event_naming_a_removed_feature_brings_it_back() -> None:
    repo = ListeningRepository()
    repo.absence_seconds = 0.0
    repo.notify("features", [feat("A"), feat("B")])
    repo.notify("features", [feat("A")])
    assert not repo.feature("B").exists
    repo.notify("feature", feat("B"))
    assert repo.feature("B").exists and "id-B" not in repo.tombstones()


def test_an_empty_list_removes_nothing_for_six_graces() -> None:
    """An Edge restarting with an empty cache, a misconfigured replica: an empty list is
    the most suspect of lists. Its silence counts only after six graces (a poll-mode
    environment whose last feature was retired does empty in the end)."""
    repo = ListeningRepository()
    now = [1000.0]
    repo.use_clock(lambda: now[0])
    repo.absence_seconds = 10.0
    repo.notify("features", [feat("A"), feat("B")])
    for _ in range(59):
        now[0] += 1.0
        repo.notify("features", [])
        repo.edge_list_unchanged()
    assert repo.feature("A").exists and repo.feature("B").exists and not repo.tombstones()
    now[0] += 2.5                                        # six graces since the first one
    repo.edge_list_unchanged()
    assert not repo.feature("A").exists and not repo.feature("B").exists
    repo.notify("features", [feat("A"), feat("B")])      # Edge recovers: all back at once
    assert repo.feature("A").exists and repo.feature("B").exists


def test_a_list_lacking_most_features_counts_only_after_six_graces() -> None:
    repo = ListeningRepository()
    now = [1000.0]
    repo.use_clock(lambda: now[0])
    repo.absence_seconds = 10.0
    repo.notify("features", [feat(k) for k in "ABCD"])
    repo.notify("features", [feat("A")])          # names 1 of 4: suspect
    now[0] += 59.0
    repo.edge_list_unchanged()
    assert all(repo.feature(k).exists for k in "BCD")
    now[0] += 1.5
    repo.edge_list_unchanged()
    assert not any(repo.feature(k).exists for k in "BCD") and repo.feature("A").exists


def test_a_poll_304_keeps_the_absence_clock_running() -> None:
    """A 304 is Edge's last list seen again (edge-common FeatureGet.kt answers 304 when
    If-None-Match matches): a feature that list lacks is removed after the grace even when
    Edge never sends another full list."""
    repo = ListeningRepository()
    now = [1000.0]
    repo.use_clock(lambda: now[0])
    repo.absence_seconds = 10.0
    repo.notify("features", [feat("A"), feat("B")])
    repo.notify("features", [feat("A")])
    now[0] += 10.5
    repo.edge_list_unchanged()
    assert not repo.feature("B").exists and repo.feature("A").exists


def test_silence_counts_only_while_the_edge_view_is_current() -> None:
    repo = ListeningRepository()
    live = [False]
    repo.edge_live = lambda: live[0]
    repo.absence_seconds = 0.0
    repo.notify("features", [feat("A"), feat("B")])
    repo.notify("features", [feat("A")])
    assert repo.feature("B").exists
    live[0] = True
    repo.edge_list_unchanged()
    assert not repo.feature("B").exists


def test_a_feature_is_deleted_only_when_full_lists_keep_lacking_it_past_the_grace() -> None:
    repo = ListeningRepository()
    now = [1000.0]
    repo.use_clock(lambda: now[0])                    # the grace is stepped over, not slept
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


def test_the_absence_clock_runs_across_a_reconnect() -> None:
    """The real Edge ends every SSE stream after 30 s (edge-full EventOutputBucketService:
    ``bye`` after drop-after-seconds): a clock reset at each reconnect would never reach a
    longer grace, and a feature deleted while no stream listened would stay for good."""
    repo = ListeningRepository()
    now = [1000.0]
    live = [True]
    repo.use_clock(lambda: now[0])
    repo.edge_live = lambda: live[0]
    repo.absence_seconds = 100.0
    repo.notify("features", [feat("A"), feat("B")])
    for _ in range(4):                       # four 30 s streams, each list lacking B
        repo.notify("features", [feat("A")])
        now[0] += 30.0
        live[0] = False
        repo.edge_list_unchanged()           # judged while reconnecting: nothing happens
        live[0] = True
    repo.notify("features", [feat("A")])
    assert not repo.feature("B").exists and repo.feature("A").exists


def test_only_the_proposer_confirms_and_the_mark_keeps_the_proposals_time() -> None:
    """A peer confirming a proposal it read just before the proposer's Edge named the
    feature again would remove it fleet-wide: the proposer confirms its own, and the
    confirmed mark keeps the proposal's time, so an Edge naming since still lifts it."""
    a = ListeningRepository()
    a.shared, a.absence_seconds = True, 0.0
    a.notify("features", [feat("A"), feat("B")])
    a.notify("features", [feat("A")])                 # a's view lacks B: a proposes
    proposal = a.tombstones()["id-B"]
    assert proposal.proposed and a.feature("B").exists, "a proposal removes nothing"
    stored = {"id-B": proposal}
    a.shared_written(stored)
    b = ListeningRepository()                          # a peer whose Edge names B
    b.shared = True
    b.notify("features", [feat("A"), feat("B")])
    c = ListeningRepository()                          # a follower: no Edge view at all
    c.shared, c.absence_seconds = True, 100.0
    assert b.confirm_marks(stored, after=0.0) == []
    assert c.confirm_marks(stored, after=0.0) == [], "not its proposal, its proposer lives"
    assert a.confirm_marks(stored, after=0.0) == ["B"]
    mark = a.tombstones()["id-B"]
    assert not mark.proposed and mark.deleted_at == proposal.deleted_at
    assert not a.feature("B").exists
    c.absence_seconds = 0.0                            # two graces on: the proposer is gone
    assert c.confirm_marks(stored, after=0.0) == ["B"]
