"""The reconciliation rule and tombstones: pure, so every case is cheap to state exactly."""

from __future__ import annotations

import json
from typing import Any

from fh_prefork import features as fs
from fh_prefork import tombstones as ts
from fh_prefork.store.reconcile import Plan, reconcile
from fh_prefork.tombstones import Tombstone
from tests.support.stores import feat

NOW = 1_700_000_000.0   # in the past: decoding takes a future time as now
WEEK = 7 * 24 * 3600.0


def decoded(*features: dict[str, Any]) -> fs.Decoded:
    return fs.decode(json.dumps(list(features)).encode(), 10**6)


def run(stored: fs.Decoded, held: list[dict[str, Any]], *, present: bool = True,
        stored_tombs: ts.Tombstones | None = None, local_tombs: ts.Tombstones | None = None,
        knows_state: bool = True) -> Plan:
    return reconcile(stored, present, stored_tombs or {}, held, local_tombs or {}, now=NOW,
                     keep_seconds=WEEK, max_tombstones=1000, knows_state=knows_state)


def versions(plan: Plan) -> dict[str, int]:
    return {fid: f["version"] for fid, f in plan.live.items()}


def tomb(fid: str, version: int, age: float = 0.0) -> Tombstone:
    return Tombstone(fid, fid, version, NOW - age)


def test_absence_is_not_deletion_what_the_store_lost_is_written_back() -> None:
    plan = run(decoded(feat("a", 2, fid="a")),
               [feat("a", 1, fid="a"), feat("b", 1, fid="b"), feat("c", 3, fid="c")])
    assert versions(plan) == {"a": 2, "b": 1, "c": 3}
    assert plan.write and sorted(plan.restored) == ["b", "c"]
    assert [f["id"] for f in plan.replay] == ["a"]


def test_an_empty_store_gets_everything_the_process_knows_in_one_write() -> None:
    plan = run(fs.Decoded(), [feat("a", 1, fid="a"), feat("b", 1, fid="b")], present=False)
    assert plan.write and versions(plan) == {"a": 1, "b": 1}


def test_a_process_that_knows_nothing_does_not_write_an_absent_store() -> None:
    assert not run(fs.Decoded(), [], present=False, knows_state=False).write
    assert run(fs.Decoded(), [], present=False, knows_state=True).write


def test_a_stale_value_is_healed_and_never_replayed_over_newer_state() -> None:
    plan = run(decoded(feat("a", 1, fid="a"), feat("b", 1, fid="b")),
               [feat("a", 5, fid="a"), feat("b", 1, fid="b")])
    assert versions(plan) == {"a": 5, "b": 1}
    assert plan.write and plan.restored == ["a"] and plan.replay == []


def test_nothing_to_do_when_the_store_holds_the_truth() -> None:
    plan = run(decoded(feat("a", 2, fid="a"), feat("b", 1, fid="b")), [feat("a", 1, fid="a")])
    assert not plan.write and not plan.restored and not plan.buried


def test_a_tombstone_deletes_in_the_store_and_in_the_process() -> None:
    plan = run(decoded(feat("a", 3, fid="a"), feat("b", 1, fid="b")),
               [feat("a", 3, fid="a"), feat("b", 1, fid="b")],
               stored_tombs={"a": tomb("a", 3)})
    assert versions(plan) == {"b": 1}
    assert plan.buried == ["a"] and [t.id for t in plan.deletes] == ["a"]


def test_a_local_tombstone_reaches_a_store_that_lost_it_and_stops_resurrection() -> None:
    # the store came back stale: it holds the deleted feature and no tombstone
    plan = run(decoded(feat("a", 3, fid="a"), feat("b", 1, fid="b")), [feat("b", 1, fid="b")],
               local_tombs={"a": tomb("a", 3)})
    assert versions(plan) == {"b": 1}
    assert plan.write and plan.tombstones_changed and "a" in plan.tombstones


def test_a_lagging_copy_of_a_deleted_version_is_not_written_back() -> None:
    plan = run(decoded(feat("b", 1, fid="b")), [feat("a", 2, fid="a"), feat("b", 1, fid="b")],
               stored_tombs={"a": tomb("a", 2)})
    assert versions(plan) == {"b": 1} and plan.restored == []
    assert [t.id for t in plan.deletes] == ["a"]


def test_a_version_above_the_tombstone_is_a_recreation_and_lives() -> None:
    plan = run(decoded(), [feat("a", 4, fid="a")], stored_tombs={"a": tomb("a", 3)})
    assert versions(plan) == {"a": 4}


def test_tombstones_expire_and_are_bounded_oldest_first() -> None:
    tombs = {f"t{i}": tomb(f"t{i}", 1, age=float(i)) for i in range(10)}
    tombs["old"] = tomb("old", 1, age=WEEK + 1)
    kept = ts.prune(tombs, NOW, WEEK, 5)
    assert sorted(kept) == ["t0", "t1", "t2", "t3", "t4"]


def test_rewriting_a_tombstone_never_extends_its_life() -> None:
    early, late = tomb("a", 3, age=100), tomb("a", 3, age=1)
    assert ts.union({"a": late}, {"a": early})["a"] == early
    assert ts.newer(early, tomb("a", 4, age=0)).version == 4


def test_entries_we_cannot_evaluate_are_kept_verbatim_unless_superseded() -> None:
    bad = {**feat("x", 4, fid="x"), "strategies": 5}
    plan = run(decoded(feat("a", 1, fid="a"), bad), [feat("a", 1, fid="a")])
    assert not plan.write and plan.live["x"] is not None
    assert [f["id"] for f in plan.replay] == []  # never replayed
    plan = run(decoded(feat("a", 1, fid="a"), bad), [feat("a", 1, fid="a"), feat("x", 5, fid="x")])
    assert plan.live["x"]["version"] == 5


def test_junk_is_rewritten_but_a_value_only_too_large_for_us_is_left_alone() -> None:
    junk = fs.decode(b"not json", 100)
    assert run(junk, [feat("a", 1, fid="a")]).write
    big = fs.decode(b"[" + b" " * 200 + b"]", 100)
    assert big.too_large and not run(big, [feat("a", 1, fid="a")]).write


def test_tombstone_codec_round_trips_and_skips_junk() -> None:
    tombs = {"a": tomb("a", 3), "b": tomb("b", 1)}
    assert ts.decode(ts.encode(tombs.values()), 10**6) == (tombs, 0)
    raw = b'[{"id": "a", "key": "K", "version": 2, "deleted_at": 1}, {"id": 5}, 7]'
    decoded_tombs, bad = ts.decode(raw, 10**6)
    assert list(decoded_tombs) == ["a"] and bad == 2
    assert ts.decode(b"\x80junk", 10**6) == ({}, 1)


def test_a_tombstone_from_the_future_or_forever_expires_like_any_other() -> None:
    """A writer's clock ahead, or a hand-made entry, must not make a deletion permanent."""
    import time

    raw = (b'[{"id": "f", "key": "F", "version": 1, "deleted_at": 1e12},'
           b' {"id": "i", "key": "I", "version": 1, "deleted_at": Infinity},'
           b' {"id": "n", "key": "N", "version": 1, "deleted_at": NaN}]')
    before = time.time()
    decoded_tombs, bad = ts.decode(raw, 10**6)
    assert list(decoded_tombs) == ["f"] and bad == 2, "non-finite times are junk"
    assert before <= decoded_tombs["f"].deleted_at <= time.time(), "taken as deleted now"
    later = time.time() + ts.KEEP_SECONDS + 1
    assert ts.prune(decoded_tombs, later, ts.KEEP_SECONDS, 1000) == {}
    assert b"Infinity" not in ts.encode(decoded_tombs.values())
