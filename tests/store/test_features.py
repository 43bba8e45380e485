"""Merge, fingerprint and codec: the pure rules every backend relies on."""

from __future__ import annotations

import hashlib
import json

import pytest

from fh_prefork import features as fs


def feat(fid: str, version: int, key: str | None = None, value: object = True) -> dict:
    return {"id": fid, "key": key or f"K_{fid}", "l": False, "version": version,
            "type": "BOOLEAN", "value": value, "strategies": []}


def test_fingerprint_is_the_cross_sdk_form() -> None:
    features = [feat("b", 2), feat("a", 10), feat("c", 1)]
    expected = hashlib.sha256(b"a:10|b:2|c:1").hexdigest()
    assert fs.fingerprint(features) == expected
    assert fs.fingerprint(reversed(features)) == expected


def test_fingerprint_of_nothing_is_sha_of_empty_string() -> None:
    assert fs.fingerprint([]) == hashlib.sha256(b"").hexdigest()


def test_merge_keeps_the_higher_version_by_id() -> None:
    stored = {"a": feat("a", 3), "b": feat("b", 5)}
    result = fs.merge(stored, {"a": feat("a", 4), "b": feat("b", 2), "c": feat("c", 1)}, {})
    by_id = {f["id"]: f["version"] for f in result.features}
    assert by_id == {"a": 4, "b": 5, "c": 1}
    assert result.changed


def test_merge_of_what_is_already_stored_changes_nothing() -> None:
    stored = {"a": feat("a", 3)}
    assert not fs.merge(stored, {"a": feat("a", 3)}, {}).changed
    assert not fs.merge(stored, {"a": feat("a", 1)}, {}).changed


def test_delete_removes_unless_the_store_holds_a_newer_version() -> None:
    stored = {"a": feat("a", 3), "b": feat("b", 9)}
    result = fs.merge(stored, {}, {"a": 3, "b": 4, "zz": 1})
    assert [f["id"] for f in result.features] == ["b"]
    assert result.changed


@pytest.mark.parametrize("bad", [
    None, 1, "x", [], {"key": "K", "version": 1}, {"id": "a", "version": 1},
    {"id": "a", "key": "K"}, {"id": "a", "key": "K", "version": "3"},
    {"id": "a", "key": "K", "version": -1}, {"id": "a", "key": "K", "version": 2**64},
    {"id": "a", "key": "K", "version": True}, {"id": "a", "key": "K", "version": 1.5},
    {"id": "", "key": "K", "version": 1}, {"id": 7, "key": "K", "version": 1},
])
def test_sanitize_rejects_unusable_states(bad: object) -> None:
    assert fs.sanitize_feature(bad) is None


def test_decode_plain_and_ruby_forms() -> None:
    plain = json.dumps([feat("a", 1)]).encode()
    ruby = json.dumps(json.dumps([feat("a", 1)])).encode()  # Dalli's JSON serializer wraps it
    assert fs.decode(plain, 10_000).features == fs.decode(ruby, 10_000).features == [feat("a", 1)]


@pytest.mark.parametrize("raw, problem", [
    (b"not json", "not JSON"),
    (b'{"a": 1}', "expected a JSON array"),
    (b"\x80\x04\x95junk", "not UTF-8"),
    (b"[" * 4_000 + b"]" * 4_000, "nested too deeply"),
    (b"[" + b"1," * 10_000 + b"1]", "exceeds"),
])
def test_decode_reports_unusable_values(raw: bytes, problem: str) -> None:
    decoded = fs.decode(raw, 10_000)
    assert decoded.features == []
    assert decoded.problem is not None and problem in decoded.problem


def test_decode_skips_bad_entries_and_keeps_highest_duplicate() -> None:
    raw = json.dumps([feat("a", 1), {"nope": 1}, feat("a", 7), feat("a", 3), 5]).encode()
    decoded = fs.decode(raw, 10_000)
    assert decoded.features == [feat("a", 7)]
    assert decoded.dropped == 4


def test_decode_fingerprint_accepts_plain_and_json_string() -> None:
    assert fs.decode_fingerprint(b"abc") == "abc"
    assert fs.decode_fingerprint(b'"abc"') == "abc"
    assert fs.decode_fingerprint(None) is None
    assert fs.decode_fingerprint(b"\xff") is None


def test_encode_is_compact_sorted_json() -> None:
    raw = fs.encode([feat("b", 1), feat("a", 2)])
    assert [f["id"] for f in json.loads(raw)] == ["a", "b"]
    assert b" " not in raw
