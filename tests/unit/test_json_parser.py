"""orjson, when installed, parses a store value to exactly what json.loads gives, or hands it over.

Every comparison is exact: equal values of the same types all the way down (an int
is not a float of the same value), NaN equal to NaN, the sign of a zero kept. What
json.loads refuses, loads refuses alike (json's own exception and words).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fh_prefork import features as fs
from fh_prefork import json_parser


@pytest.fixture(autouse=True)
def orjson_answers() -> Iterator[list[bytes]]:
    """The texts orjson is asked to parse: with orjson absent, every comparison here would
    hold json against itself, so its absence is a failure, not a skip."""
    assert json_parser.parser().startswith("orjson "), "the test dependency group installs it"
    asked: list[bytes] = []
    real = json_parser._fast
    assert real is not None

    def counting(data: bytes) -> Any:
        asked.append(data)
        return real(data)

    json_parser._fast = counting
    try:
        yield asked
    finally:
        json_parser._fast = real


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down; NaN equals NaN; the sign of zero counts."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a)
                                                     == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def outcome(parse: Callable[[str], Any], text: str) -> tuple[str, Any]:
    try:
        return "value", parse(text)
    except (ValueError, RecursionError) as err:
        return "error", (type(err), str(err))


def assert_as_json_reads(text: str) -> None:
    got, want = outcome(json_parser.loads, text), outcome(json.loads, text)
    assert got[0] == want[0], (text[:80], got, want)
    if got[0] == "value":
        assert same(got[1], want[1]), (text[:80], got[1], want[1])
    else:
        assert got[1] == want[1], text[:80]


EDGES = [
    # what orjson also reads
    '[{"id":"a","key":"K","version":1,"type":"BOOLEAN","value":true,"l":false}]',
    '{"a":1,"a":2}', '-0', '-0.0', '0.1', '1E2', '1e-400', '"\\u0000"', ' [1] \n',
    '"\\ud83d\\ude00"', '"caf\u00e9 \u2028 \U0001f600"',
    '123456789012345678', '-123456789012345678',
    '[' * 300 + ']' * 300, '4.9e-324', '1.7976931348623157e308',
    # integers orjson reads as floats past 64 bits: json keeps them exact
    str(2 ** 64), str(2 ** 64 - 1), str(-2 ** 63), str(-2 ** 63 - 1), str(10 ** 30),
    '-9999999999999999999', '9999999999999999999', '[1, {"v": 100000000000000000000}]',
    '123456789012345678901234567890.5', '"a string of digits 12345678901234567890"',
    # what orjson refuses and json reads
    'NaN', '[Infinity, -Infinity]', '1e400', '-1e400', '"\\ud800"', '["\\udfff", 1]',
    # what both refuse: json's exception and words
    '', '[1,]', '[1] x', '01', '1.', '.5', '"\t"', '"\x01"', '\ufeff[1]', '{"a" 1}',
    '[' * 1100 + ']' * 1100,   # past both depth limits (json's: ~1,000; orjson's: 1,024)
    'nul', '[1]\x00',
]


@pytest.mark.parametrize("text", EDGES, ids=range(len(EDGES)))
def test_every_edge_reads_as_json_reads_it(text: str) -> None:
    assert_as_json_reads(text)


def test_orjson_answers_a_plain_value_and_json_the_rest(orjson_answers: list[bytes]) -> None:
    states = fs.encode([{"id": f"i{n}", "key": f"K{n}", "version": n, "type": "NUMBER",
                         "value": n * 1.5, "l": False} for n in range(50)]).decode()
    json_parser.loads(states)
    assert orjson_answers == [states.encode()]
    orjson_answers.clear()
    json_parser.loads(f'[{{"value": {2 ** 70}}}]')
    assert orjson_answers == [], "a run of 19 digits goes to json"
    assert json_parser.loads(f'[{{"value": {2 ** 70}}}]') == [{"value": 2 ** 70}]


def test_outside_standard_library_only_orjson_answers_again(
        orjson_answers: list[bytes]) -> None:
    with json_parser.standard_library_only():
        assert json_parser.parser() == json_parser.STANDARD_LIBRARY
        assert json_parser.loads("[1]") == [1]
    assert orjson_answers == []
    assert json_parser.parser().startswith("orjson ")
    assert json_parser.loads("[1]") == [1]
    assert orjson_answers == [b"[1]"]


def _number(rnd: random.Random) -> str:
    digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 22)))
    digits = digits.lstrip("0") or "0"
    text = ("-" if rnd.random() < 0.3 else "") + digits
    if rnd.random() < 0.3 and len(digits) > 1:
        cut = rnd.randint(1, len(digits) - 1)
        text = text[:len(text) - len(digits) + cut] + "." + text[len(text) - len(digits) + cut:]
    if rnd.random() < 0.4:
        text += rnd.choice("eE") + rnd.choice(["", "+", "-"]) + str(rnd.randint(0, 340))
    return text


def test_numbers_read_as_json_reads_them() -> None:
    rnd = random.Random(2026)
    for _ in range(20_000):
        assert_as_json_reads(_number(rnd))
    for _ in range(5_000):   # every double, as written by repr (and so by json.dumps)
        value = rnd.uniform(-1, 1) * 10 ** rnd.randint(-320, 308)
        assert_as_json_reads(repr(value))


def _document(rnd: random.Random, depth: int = 0) -> str:
    pick = rnd.random()
    if depth < 4 and pick < 0.25:
        return "[" + ",".join(_document(rnd, depth + 1) for _ in range(rnd.randint(0, 5))) + "]"
    if depth < 4 and pick < 0.5:
        keys = [rnd.choice(["id", "key", "value", "v", "\\u00e9", "a"]) for _ in range(5)]
        return "{" + ",".join(f'"{k}":{_document(rnd, depth + 1)}'
                              for k in keys[:rnd.randint(0, 5)]) + "}"
    if pick < 0.7:
        return _number(rnd)
    if pick < 0.9:
        text = "".join(chr(rnd.choice([rnd.randint(32, 126), rnd.randint(0x80, 0x2fff),
                                       rnd.randint(0x1f000, 0x1f6ff), rnd.randint(0, 31)]))
                       for _ in range(rnd.randint(0, 12)))
        return json.dumps(text, ensure_ascii=rnd.random() < 0.5)
    return rnd.choice(["true", "false", "null", "NaN", '"\\ud800"', '"\\/"', " [ ] "])


def test_generated_documents_read_as_json_reads_them() -> None:
    rnd = random.Random(21)
    for _ in range(5_000):
        assert_as_json_reads(_document(rnd))


def test_a_ruby_json_string_with_a_lone_surrogate_reads_as_json_reads_it() -> None:
    # the outer string's escape makes a real lone surrogate in the inner text
    inner = '[{"id":"a","key":"K\ud800","version":1,"type":"BOOLEAN","value":true}]'
    decoded = fs.decode(json.dumps(inner).encode(), 10_000, entry_texts=False)  # parsed whole
    with json_parser.standard_library_only():
        plain = fs.decode(json.dumps(inner).encode(), 10_000, entry_texts=False)
    assert decoded.form == plain.form == "json-string"
    assert same(decoded.by_id, plain.by_id)
    assert decoded.problems == plain.problems


def test_a_number_flag_past_64_bits_reaches_the_store_reader_exact() -> None:
    value = 2 ** 70 + 1
    raw = fs.encode([{"id": "n", "key": "BIG", "version": 3, "type": "NUMBER", "value": value,
                      "l": False}])
    decoded = fs.decode(raw, 10_000, entry_texts=False)
    assert type(decoded.by_id["n"]["value"]) is int
    assert decoded.by_id["n"]["value"] == value
