"""Fingerprints and the codec: the pure rules every backend relies on."""

from __future__ import annotations

import hashlib
import json
import zlib

import pytest

from fh_prefork import features as fs
from tests.support.stores import feat


def test_fingerprint_is_the_cross_sdk_form() -> None:
    features = [feat("b", 2, fid="b"), feat("a", 10, fid="a"), feat("c", 1, fid="c")]
    expected = hashlib.sha256(b"a:10|b:2|c:1").hexdigest()
    assert fs.fingerprint(features) == expected
    assert fs.fingerprint(reversed(features)) == expected


def test_fingerprint_of_nothing_is_sha_of_empty_string() -> None:
    assert fs.fingerprint([]) == hashlib.sha256(b"").hexdigest()


def test_array_order_fingerprint_is_the_ruby_form() -> None:
    pairs = [("b", 2), ("a", 10)]
    assert fs.fingerprint_in_order(pairs) == hashlib.sha256(b"b:2|a:10").hexdigest()


def test_both_fingerprint_formulas_are_consistent_with_an_unsorted_array() -> None:
    raw = json.dumps([feat("b", 2, fid="b"), feat("a", 10, fid="a")]).encode()
    consistent = fs.decode(raw, 10_000).consistent_fingerprints()
    assert consistent == {hashlib.sha256(b"a:10|b:2").hexdigest(),
                          hashlib.sha256(b"b:2|a:10").hexdigest()}


@pytest.mark.parametrize("bad", [
    None, 1, "x", [], {"key": "K", "version": 1}, {"id": "a", "version": 1},
    {"id": "a", "key": "K"}, {"id": "a", "key": "K", "version": "3"},
    {"id": "a", "key": "K", "version": -1}, {"id": "a", "key": "K", "version": 2**64},
    {"id": "a", "key": "K", "version": True}, {"id": "a", "key": "K", "version": 1.5},
    {"id": "", "key": "K", "version": 1}, {"id": 7, "key": "K", "version": 1},
])
def test_unusable_states_are_named(bad: object) -> None:
    assert fs.feature_problem(bad) is not None


def test_decode_reads_every_form_a_featurehub_store_writes() -> None:
    plain = json.dumps([feat("a", 1, fid="a")]).encode()
    # Dalli's JSON serializer wraps it
    ruby = json.dumps(json.dumps([feat("a", 1, fid="a")])).encode()
    forms = {"plain": plain, "json-string": ruby, "zlib": zlib.compress(ruby),
             "zlib-plain": zlib.compress(plain, 9)}
    for name, raw in forms.items():
        decoded = fs.decode(raw, 10_000)
        assert decoded.features == [feat("a", 1, fid="a")], name
        assert decoded.problem is None and not decoded.problems, name
    assert fs.decode(forms["zlib"], 10_000).form == "zlib"
    assert fs.decode(ruby, 10_000).form == "json-string"


def test_decode_refuses_a_zip_bomb_without_inflating_it() -> None:
    bomb = zlib.compress(b"[" + b" " * 50_000_000 + b"]", 9)
    assert len(bomb) < 100_000
    decoded = fs.decode(bomb, 1_000_000)
    assert decoded.problem is not None and "inflates past" in decoded.problem
    assert not decoded.too_large, "a bomb is junk, not a value merely over our limit"


def test_decode_reports_truncated_zlib() -> None:
    raw = zlib.compress(json.dumps([feat("a", 1, fid="a")] * 50).encode())
    decoded = fs.decode(raw[: len(raw) // 2], 10_000)
    assert decoded.problem is not None and "truncated" in decoded.problem


def test_decode_keeps_entries_the_sdk_cannot_evaluate_apart() -> None:
    bad = {**feat("b", 4, fid="b"), "strategies": 5}
    decoded = fs.decode(json.dumps([feat("a", 1, fid="a"), bad]).encode(), 10_000)
    assert decoded.features == [feat("a", 1, fid="a")]
    assert decoded.unusable == {"b": bad}
    assert set(decoded.placed) == {"a", "b"}
    assert decoded.problems and "strategies" in decoded.problems[0]


@pytest.mark.parametrize("raw, problem", [
    (b"not json", "not JSON"),
    (b'{"a": 1}', "expected a JSON array"),
    (b"\x80\x04\x95junk", "neither UTF-8 JSON nor zlib"),
    (b"[" * 4_000 + b"]" * 4_000, "nested too deeply"),
    (b"[" + b"1," * 10_000 + b"1]", "exceeds"),
])
def test_decode_reports_unusable_values(raw: bytes, problem: str) -> None:
    decoded = fs.decode(raw, 10_000)
    assert decoded.features == []
    assert decoded.problem is not None and problem in decoded.problem


def test_decode_skips_bad_entries_and_keeps_highest_duplicate() -> None:
    raw = json.dumps([feat("a", 1, fid="a"), {"nope": 1}, feat("a", 7, fid="a"),
                      feat("a", 3, fid="a"), 5]).encode()
    decoded = fs.decode(raw, 10_000)
    assert decoded.features == [feat("a", 7, fid="a")]
    assert decoded.dropped == 4


def test_decode_fingerprint_accepts_plain_and_json_string() -> None:
    assert fs.decode_fingerprint(b"abc") == "abc"
    assert fs.decode_fingerprint(b'"abc"') == "abc"
    assert fs.decode_fingerprint(None) is None
    assert fs.decode_fingerprint(b"\xff") is None


def test_encode_is_compact_sorted_json() -> None:
    raw = fs.encode([feat("b", 1, fid="b"), feat("a", 2, fid="a")])
    assert [f["id"] for f in json.loads(raw)] == ["a", "b"]
    assert b" " not in raw


def test_encode_survives_a_lone_surrogate_another_writer_sent() -> None:
    odd = {**feat("a", 1, fid="a"), "extra": json.loads('"\\ud800"')}
    raw = fs.encode([odd])
    assert fs.decode(raw, 10_000).features == [odd]
