"""Whole-shape check of one feature state against what the FeatureHub Python SDK evaluates.

Feature states reach the repository from FeatureHub Edge and from stores that
other FeatureHub SDKs (and older or newer versions of this library) write, so
any of them can hand us anything. The SDK trusts what it is given: a bad entry
does not fail when it is stored, it raises later, inside
``FeatureStateHolder`` (``"strategies": 5``), inside a value read, or inside
strategy evaluation during some request whose context happens to reach the bad
part. An entry the SDK would raise on must therefore never reach the repository.

``shape_problem`` is written against the installed SDK (``featurehub-sdk``
1.1: ``fh_state_base_holder``, ``client_context``, ``strategy_matchers``,
``featurehub_repository``, ``interceptors``) and rejects every state it was
found to raise on. Beyond that it only asks what FeatureHub Edge always sends:

* the fields the SDK reads have the JSON type Edge gives them (``id``/``key``
  non-empty strings, ``version`` an integer, ``l`` a boolean, ``strategies``,
  ``attributes``, ``percentageAttributes`` and ``values`` lists, the three
  enumerations one of the values the SDK knows, numbers finite);
* feature and strategy values have the type of the feature (JSON values are
  strings of JSON text, since ``ClientContext.get_json`` parses them);
* attribute values are usable the way the matcher of their field type uses
  them for their conditional (``float()`` for numbers,
  ``ipaddress.ip_network`` for IP addresses, node-semver for semantic
  versions, ``values[0]`` for booleans). ``REGEX`` values need only be text,
  a number or a boolean: a repository of fh_prefork matches them with
  :mod:`fh_prefork.regex` (RE2, linear time), where a pattern that does not
  compile or whose matching time cannot be bounded costs only its strategy, so a
  regular expression never drops a feature's update.

What the SDK tolerates is accepted: a missing ``type`` or ``l`` (but a
percentage strategy needs ``l``: without it the SDK hashes a null id), null
optional fields, null items among string, number and version values, and every
field this module does not know about, whatever it holds (other SDKs and newer
Edge versions add fields).

Regular expressions (:func:`regex_unbounded`, used by :mod:`fh_prefork.regex`
for the patterns RE2 refuses): the SDK runs ``re.search(pattern, value)`` on the
request path with a value the application takes from its user (user key, custom
attributes), and ``re`` backtracks while holding the GIL, so one bad pattern
stalls the whole worker: ``^(a+)+$`` took 1.3 s on 25 characters and doubles with
each one more. A pattern is unbounded when its parse tree (``re``'s own parser)
holds one of the three forms that make backtracking exponential in the length
of the value:

* a backreference (``\\1``, ``(?P=name)``, ``(?(1)...)``): matching with them is
  NP-hard in general;
* a repeat that can match more than once (``*``, ``+``, ``{m,n}`` with n > 1)
  containing any other repeat, even ``?`` (``(a+)+``, ``(a?a?)*``, ``(\\w+\\s?)*``);
* such a repeat containing an alternation of more than single characters
  (``(a|aa)+``, ``(?:foo|bar)*``; ``(a|b)+`` is parsed as ``[ab]+`` and allowed).

The rule is conservative (``(aa?)*`` and ``(?:\\.[a-z]+)+`` are refused though
harmless; write them without the nested repeat). What passes is polynomial,
not linear: every repeat body is then a fixed sequence of single steps, so a
repeat only chooses a count, and a pattern with k repeats that can match more
than once costs at most c * n^(k+1) steps on an n-character value (c depends
on the pattern only: its alternations and optional parts). ``.*.*.*.*x`` took
9 s on 200 characters. That residue depends on how long
the values are, which only the application controls: see the README.

Everything here is pure: no I/O, standard library only.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import math
from collections.abc import Callable
from typing import Any

from nodesemver import make_semver  # type: ignore[import-untyped]  # the SDK's own dependency

#: ``re``'s own parser (``re._parser`` since 3.11, ``sre_parse`` before): the tree checked is
#: the one ``re`` compiles.
try:
    _re_parser: Any = importlib.import_module("re._parser")
except ImportError:  # Python 3.10
    _re_parser = importlib.import_module("sre_parse")

#: Feature types the SDK's getters ask for (``get_flag``, ``get_string``, ...).
FEATURE_TYPES = frozenset({"BOOLEAN", "STRING", "NUMBER", "JSON"})

#: ``RolloutStrategyAttributeConditional`` values; anything else raises ValueError.
CONDITIONALS = frozenset({
    "EQUALS", "ENDS_WITH", "STARTS_WITH", "GREATER", "GREATER_EQUALS", "LESS",
    "LESS_EQUALS", "NOT_EQUALS", "INCLUDES", "EXCLUDES", "REGEX",
})

#: ``RolloutStrategyFieldType`` values; anything else raises ValueError.
FIELD_TYPES = frozenset({
    "STRING", "SEMANTIC_VERSION", "NUMBER", "DATE", "DATETIME", "BOOLEAN", "IP_ADDRESS",
})

#: Largest version accepted (a signed 64-bit counter, as Edge sends it).
MAX_VERSION = 2**63 - 1

# Conditionals for which a matcher reads the values in a particular way.
_NUMBER_AS_TEXT = frozenset({"ENDS_WITH", "STARTS_WITH", "REGEX"})
_SEMVER_COMPARED = frozenset({
    "EQUALS", "INCLUDES", "NOT_EQUALS", "EXCLUDES", "GREATER", "GREATER_EQUALS", "LESS",
    "LESS_EQUALS",
})
_IP_COMPARED = frozenset({"EQUALS", "INCLUDES", "NOT_EQUALS", "EXCLUDES"})
_BOOLEAN_COMPARED = frozenset({"EQUALS", "NOT_EQUALS"})

Check = Callable[[object], str | None]


def shape_problem(item: object) -> str | None:
    """None when usable; else a short reason naming the field.

    For example ``strategies[0].attributes[1].conditional: unknown value "FOO"``.
    """
    if type(item) is dict and plainly_usable(item):
        return None
    return _shape_problem(item)


#: Integers of less than this magnitude are finite as floats (``math.isfinite`` holds).
_FINITE_INT = 2**1000


def plainly_usable(item: dict[Any, Any]) -> bool:
    """The common state decided quickly: ASCII id and key, a known type or none, no strategies,
    and a value of the type. True only where the full check finds nothing (the unit tests
    hold the two to that on every shape they know); False means "ask the full check", which
    also names the problem, not "unusable"."""
    return plain_states([item])[0]


def plain_states(items: list[Any]) -> list[bool]:
    """:func:`plainly_usable` of each item, in one pass: nearly every stored state is plain,
    and a worker's start checks hundreds of them."""
    types, top = FEATURE_TYPES, MAX_VERSION
    out = []
    for item in items:
        if type(item) is not dict:
            out.append(False)
            continue
        get = item.get
        fid, key, version = get("id"), get("key"), get("version")
        feature_type, locked, strategies = get("type"), get("l"), get("strategies")
        if not (type(fid) is str and type(key) is str and fid and key and fid.isascii()
                and key.isascii() and type(version) is int and 0 <= version <= top) or (
                feature_type is not None and (type(feature_type) is not str
                                              or feature_type not in types)
                or locked is not None and type(locked) is not bool
                or strategies is not None and (type(strategies) is not list or strategies)):
            out.append(False)
            continue
        value = get("value")
        kind = type(value)
        if value is None or feature_type == "BOOLEAN":
            out.append(value is None or kind is bool)
        elif feature_type == "STRING":
            out.append(kind is str)
        elif feature_type is None and (kind is str or kind is bool):
            out.append(True)
        elif feature_type == "JSON":
            out.append(False)   # JSON text is parsed to be checked: the full check does it
        else:                   # a number, typed or not
            out.append(kind is float and math.isfinite(value)
                       or kind is int and -_FINITE_INT < value < _FINITE_INT)
    return out


def _shape_problem(item: object) -> str | None:
    """:func:`shape_problem` without the quick path: every field checked, the first problem
    named."""
    if not isinstance(item, dict):
        return f"feature state must be an object, found {_kind(item)}"
    feature_type = item.get("type")
    return (
        _identity_problem(item)
        or _field("type", feature_type, _feature_type_problem)
        or _field("l", item.get("l"), _optional(_bool_problem))
        or _field("value", item.get("value"), _value_check(feature_type))
        or _strategies_problem(item)
    )


# -- top level ---------------------------------------------------------------


def _identity_problem(item: dict[object, object]) -> str | None:
    return (
        _field("id", item.get("id"), _id_problem)
        or _field("key", item.get("key"), _id_problem)
        or _field("version", item.get("version"), _version_problem)
    )


def _id_problem(value: object) -> str | None:
    """Non-empty text: the SDK hashes the id as UTF-8 and looks the key up in os.environ."""
    if not isinstance(value, str):
        return f"must be a non-empty string, found {_kind(value)}"
    return _utf8_problem(value) if value else "must be a non-empty string, found an empty one"


def _version_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, found {_kind(value)}"
    if not 0 <= value <= MAX_VERSION:
        return "out of range [0, 2**63-1]"
    return None


def _feature_type_problem(value: object) -> str | None:
    """A missing type is tolerated: the typed getters return None, get_value the raw value."""
    if value is None:
        return None
    return _enum_problem(value, FEATURE_TYPES)


def _strategies_problem(item: dict[object, object]) -> str | None:
    feature_type, exists = item.get("type"), item.get("l") is not None
    return _field("strategies", item.get("strategies"), _optional(_items(
        lambda strategy: _strategy_problem(strategy, feature_type, exists))))


# -- strategies --------------------------------------------------------------


def _strategy_problem(strategy: object, feature_type: object, exists: bool) -> str | None:
    """Problem in one strategy, as a suffix: ``.field: reason`` or ``: reason``."""
    if not isinstance(strategy, dict):
        return f": must be an object, found {_kind(strategy)}"
    problem = (
        _member("id", strategy.get("id"), _optional(_text_problem))
        or _member("name", strategy.get("name"), _optional(_text_problem))
        or _member("value", strategy.get("value"), _value_check(feature_type))
        or _member("percentage", strategy.get("percentage"), _optional(_number_problem))
        or _member("percentageAttributes", strategy.get("percentageAttributes"),
                   _optional(_list_of(_text_problem)))
        or _member("attributes", strategy.get("attributes"), _optional(_items(_attribute_problem)))
    )
    if problem is None and not exists and _percentage(strategy) != 0:
        # Without "l" the SDK's holder reports no id, and the percentage hash
        # concatenates that None onto a string (TypeError on every request).
        return '.percentage: a percentage strategy needs "l" (the SDK hashes a null id without it)'
    return problem


def _percentage(strategy: dict[object, object]) -> int:
    """The SDK's ``RolloutStrategy.percentage`` (only called on a valid percentage)."""
    value = strategy.get("percentage")
    return int(value) if isinstance(value, (int, float)) else 0


def _attribute_problem(attribute: object) -> str | None:
    if not isinstance(attribute, dict):
        return f": must be an object, found {_kind(attribute)}"
    conditional, field_type = attribute.get("conditional"), attribute.get("type")
    return (
        _member("conditional", conditional, lambda v: _enum_problem(v, CONDITIONALS))
        or _member("fieldName", attribute.get("fieldName"), _text_problem)
        or _member("type", field_type, lambda v: _enum_problem(v, FIELD_TYPES))
        or _member("values", attribute.get("values"),
                   _optional(_values_check(str(field_type), str(conditional))))
    )


# -- attribute values, the way each matcher uses them ------------------------


def _values_check(field_type: str, conditional: str) -> Check:
    element = _element_check(field_type, conditional)

    def check(values: object) -> str | None:
        if not isinstance(values, list):
            return f"must be a list or null, found {_kind(values)}"
        if field_type == "BOOLEAN" and conditional in _BOOLEAN_COMPARED and not values:
            return "must not be empty (the boolean matcher reads values[0])"
        return _list_of(element)(values)

    return check


def _element_check(field_type: str, conditional: str) -> Check:
    if field_type == "BOOLEAN":
        return _boolean_element_problem
    if field_type == "IP_ADDRESS" and conditional in _IP_COMPARED:
        return _ip_element_problem
    if field_type == "SEMANTIC_VERSION" and conditional in _SEMVER_COMPARED:
        return _semver_element_problem
    if field_type in ("IP_ADDRESS", "SEMANTIC_VERSION"):
        return _optional(_scalar_problem)  # the matcher ignores this conditional
    if conditional == "REGEX":
        return _optional(_regex_element_problem)
    if field_type == "NUMBER" and conditional not in _NUMBER_AS_TEXT:
        return _optional(_numeric_element_problem)
    return _optional(_scalar_problem)  # string, date, datetime; numbers compared as text


def _scalar_problem(value: object) -> str | None:
    """A JSON string, number or boolean: every matcher turns these into text with str()."""
    if isinstance(value, (str, bool)):
        return None
    if isinstance(value, (int, float)):
        return _number_problem(value)
    return f"must be a string, number or boolean, found {_kind(value)}"


def _boolean_element_problem(value: object) -> str | None:
    """The boolean matcher compares ``str(values[0]).lower()`` with "true"."""
    if isinstance(value, (bool, str)):
        return None
    return f"must be a boolean or a string, found {_kind(value)}"


def _numeric_element_problem(value: object) -> str | None:
    """The number matcher calls float() on every value; only ValueError is caught."""
    if isinstance(value, str):
        return None if _parses_as_float(value) else f"not a number: {_quote(value)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number_problem(value)
    return f"must be a number, found {_kind(value)}"


def _regex_element_problem(value: object) -> str | None:
    """A pattern is text (``str()`` of a number or boolean): whether it compiles, and how
    long it can take, is :mod:`fh_prefork.regex`'s business, per strategy, never the
    feature's."""
    return _scalar_problem(value)


_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})


def regex_unbounded(pattern: str) -> str | None:
    """Why ``re`` cannot bound the time ``pattern`` takes (see the module docstring), or None.

    The pattern must compile.
    """
    return _tree_problem(_re_parser.parse(pattern), inside_repeat=False)


def _tree_problem(items: Any, inside_repeat: bool) -> str | None:
    for op, av in items:
        name = str(op)
        if name in ("GROUPREF", "GROUPREF_EXISTS"):
            return "holds a backreference"
        if name in _REPEATS:
            low, high, body = av
            if inside_repeat:
                return "nests a repeat inside a repeat"
            problem = _tree_problem(body, inside_repeat=high > 1)
        elif name == "BRANCH":
            if inside_repeat:
                return "repeats an alternation"
            problem = _first(_tree_problem(branch, inside_repeat) for branch in av[1])
        elif name == "SUBPATTERN":
            problem = _tree_problem(av[-1], inside_repeat)
        elif name in ("ASSERT", "ASSERT_NOT"):
            problem = _tree_problem(av[1], inside_repeat)
        elif name == "ATOMIC_GROUP":
            problem = _tree_problem(av, inside_repeat)
        else:
            problem = None  # literals, classes, anchors: one step each
        if problem is not None:
            return problem
    return None


def _first(problems: Any) -> str | None:
    return next((p for p in problems if p is not None), None)


def _ip_element_problem(value: object) -> str | None:
    """``ipaddress.ip_network(value)`` on the raw value (strict: no host bits set)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"must be an IP address or network string, found {_kind(value)}"
    try:
        ipaddress.ip_network(value)
    except ValueError:
        return f"not an IP address or network: {_quote(value)}"
    return None


def _semver_element_problem(value: object) -> str | None:
    """node-semver (loose) parses ``str(value)``; null values are skipped."""
    if value is None:
        return None
    problem = _scalar_problem(value)
    if problem is not None:
        return problem
    if not _semver_parses(str(value)):
        return f"not a semantic version: {_quote(value)}"
    return None


def _semver_parses(text: str) -> bool:
    """Whether the SDK's own parser (nodesemver, loose, as its matcher calls it) accepts it."""
    try:
        make_semver(text, True)
    except Exception:   # ValueError mostly; whatever it raises, the matcher would too
        return False
    return True


# -- feature values ----------------------------------------------------------


def _value_check(feature_type: object) -> Check:
    checks: dict[object, Check] = {
        "BOOLEAN": _bool_problem,
        "STRING": _text_problem,
        "NUMBER": _number_problem,
        "JSON": _json_text_problem,
    }
    known = checks.get(feature_type) if isinstance(feature_type, str) else None
    return _optional(known or _scalar_problem)


def _json_text_problem(value: object) -> str | None:
    """JSON values are JSON text in a string; ``ClientContext.get_json`` parses them."""
    if not isinstance(value, str):
        return f"must be a string of JSON text, found {_kind(value)}"
    if value:
        try:
            json.loads(value)
        except (ValueError, RecursionError):
            return "not valid JSON text"
    return None


# -- small checks ------------------------------------------------------------


def _bool_problem(value: object) -> str | None:
    return None if isinstance(value, bool) else f"must be a boolean, found {_kind(value)}"


def _text_problem(value: object) -> str | None:
    return None if isinstance(value, str) else f"must be a string, found {_kind(value)}"


def _number_problem(value: object) -> str | None:
    """A finite JSON number (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, found {_kind(value)}"
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    return None if finite else "must be a finite number"


def _enum_problem(value: object, known: frozenset[str]) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, found {_kind(value)}"
    return None if value in known else f"unknown value {_quote(value)}"


def _utf8_problem(value: str) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 text (lone surrogate)"
    return None


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _list_of(check: Check) -> Check:
    """A list whose elements pass ``check``; a problem reads ``[i]: reason``."""
    return _items(lambda value: _suffix(check(value)))


def _items(check: Check) -> Check:
    """A list of elements ``check`` gives suffix problems for (``.field: reason``, ``: reason``).

    One loop for strategies, attributes and plain lists, so their paths read alike.
    """
    def check_list(values: object) -> str | None:
        if not isinstance(values, list):
            return f"must be a list or null, found {_kind(values)}"
        for index, value in enumerate(values):
            problem = check(value)
            if problem is not None:
                return f"[{index}]{problem}"
        return None

    return check_list


def _suffix(problem: str | None) -> str | None:
    return None if problem is None else f": {problem}"


def _field(name: str, value: object, check: Check) -> str | None:
    return _join(name, check(value))


def _member(name: str, value: object, check: Check) -> str | None:
    problem = _join(name, check(value))
    return None if problem is None else f".{problem}"


def _join(name: str, problem: str | None) -> str | None:
    if problem is None:
        return None
    return f"{name}{problem}" if problem.startswith("[") else f"{name}: {problem}"


def _kind(value: object) -> str:
    names = {type(None): "null", bool: "boolean", int: "integer", float: "number",
             str: "string", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _quote(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
