"""shape_problem: every Edge shape accepted, every shape the SDK raises on rejected.

Each table row is also run through the real FeatureHub SDK (repository, holder,
client-evaluated context, every value read, the update path), so the tests
prove two things at once: accepted states never make the SDK raise, and the
rejections marked ``RAISES`` guard a failure the SDK really has.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
from featurehub_sdk.client_context import ClientEvalFeatureContext
from featurehub_sdk.featurehub_repository import FeatureHubRepository
from featurehub_sdk.interceptors import EnvironmentInterceptor
from nodesemver import make_semver  # type: ignore[import-untyped]

from fh_prefork.feature_shape import (
    CONDITIONALS,
    FIELD_TYPES,
    _shape_problem,
    plainly_usable,
    shape_problem,
)

State = dict[str, Any]

# -- building blocks -------------------------------------------------------------------------


def feature(ftype: Any = "BOOLEAN", value: Any = True, **extra: Any) -> State:
    state: State = {"id": "227dc2e8-59e8-424a-b510-328ef52010f7", "key": "FEATURE_X", "l": False,
                    "version": 3, "type": ftype, "value": value}
    if ftype is None:
        del state["type"]
    state.update(extra)
    return state


def attr(ftype: str, cond: str, values: Any, field: Any = "f", **extra: Any) -> State:
    return {"id": "a1", "conditional": cond, "fieldName": field, "type": ftype, "values": values,
            **extra}


def with_attr(attribute: Any, ftype: str = "BOOLEAN", svalue: Any = True) -> State:
    """A feature whose one strategy has one attribute (evaluated whenever "f" is supplied)."""
    return feature(ftype, strategies=[{"id": "s1", "name": "rule", "value": svalue,
                                       "attributes": [attribute]}])


def with_strategy(strategy: Any, ftype: str = "BOOLEAN", value: Any = True, **extra: Any) -> State:
    return feature(ftype, value, strategies=[strategy], **extra)


def everyone(svalue: Any) -> State:
    """A strategy every user key falls into (100%), so its value is what reads return."""
    return {"id": "s-all", "name": "everyone", "percentage": 1000000, "value": svalue}


#: Typical attribute values per field type and conditional, as FeatureHub Edge sends them.
GOOD_VALUES: dict[str, list[Any]] = {
    "STRING": ["alpha", "beta"], "DATE": ["2019-01-01", "2019-02-01"],
    "DATETIME": ["2019-01-01T01:01:01Z"], "NUMBER": [5, 10.5],
    "SEMANTIC_VERSION": ["2.0.3", "1.2.0-beta.1"], "BOOLEAN": [True],
    "IP_ADDRESS": ["192.168.86.75", "10.0.0.0/8", "2001:db8::/32"],
}
REGEX_VALUES = {"STRING": ["^al.*"], "DATE": ["2019-.*"], "DATETIME": ["(.*)-03-(.*)"],
                "NUMBER": ["^5"]}
FEATURE_VALUES = {"BOOLEAN": (False, True), "STRING": ("blue", "red"), "NUMBER": (1, 2.5),
                  "JSON": ('{"a": 1}', '[1, 2, "x"]')}


def each_conditional_and_field_type() -> Iterator[Any]:
    ftypes = list(FEATURE_VALUES)
    pairs = [(f, c) for f in sorted(FIELD_TYPES) for c in sorted(CONDITIONALS)]
    for i, (field, cond) in enumerate(pairs):
        ftype = ftypes[i % len(ftypes)]
        values = GOOD_VALUES[field]
        if cond == "REGEX":
            values = REGEX_VALUES.get(field, values)
        state = feature(ftype, FEATURE_VALUES[ftype][0], strategies=[
            {"id": "s1", "name": "rule", "value": FEATURE_VALUES[ftype][1],
             "attributes": [attr(field, cond, list(values))]}])
        yield pytest.param(state, id=f"{field}-{cond}-{ftype}")


# -- shapes the real Edge (and the other SDKs' stores) hand us -------------------------------

ACCEPTED: list[Any] = [
    pytest.param(feature("BOOLEAN", True, strategies=[]), id="boolean"),
    pytest.param(feature("BOOLEAN", False, l=True), id="boolean-locked-no-strategies-key"),
    pytest.param(feature("BOOLEAN", None, strategies=None), id="boolean-null-strategies-null"),
    pytest.param(feature("STRING", "blue", strategies=[]), id="string"),
    pytest.param(feature("STRING", ""), id="string-empty"),
    pytest.param(feature("STRING", None), id="string-null"),
    pytest.param(feature("NUMBER", 42), id="number-int"),
    pytest.param(feature("NUMBER", -12.75), id="number-float"),
    pytest.param(feature("NUMBER", None), id="number-null"),
    pytest.param(feature("JSON", '{"colour": "blue", "sizes": [1, 2]}'), id="json"),
    pytest.param(feature("JSON", "[]"), id="json-array-text"),
    pytest.param(feature("JSON", ""), id="json-empty-string"),
    pytest.param(feature("JSON", None), id="json-null"),
    pytest.param(feature("BOOLEAN", True, version=0), id="version-0"),
    pytest.param(feature("BOOLEAN", True, version=2**63 - 1), id="version-max"),
    pytest.param(feature(None, "anything"), id="type-absent"),
    pytest.param(feature("BOOLEAN", True, l=None), id="l-null-no-percentage"),
    pytest.param({k: v for k, v in feature("STRING", "x").items() if k != "l"}, id="l-absent"),
    pytest.param(feature("BOOLEAN", True, l=None, strategies=[
        {"id": "s", "value": False, "attributes": [attr("STRING", "EQUALS", ["alpha"])]}]),
        id="l-null-attribute-strategy"),
    pytest.param(with_strategy(everyone(False)), id="boolean-percentage"),
    pytest.param(feature("STRING", "base", strategies=[
        {"id": "p1", "name": "20%", "percentage": 200000, "value": "twenty"},
        {"id": "p2", "name": "by company", "percentage": 300000,
         "percentageAttributes": ["company"], "value": "thirty"},
        {"id": "p3", "name": "half of alpha", "percentage": 500000, "value": "fifty",
         "attributes": [attr("STRING", "EQUALS", ["alpha"])]},
        {"id": "p4", "percentage": 0, "percentageAttributes": [], "attributes": [], "value": None},
    ]), id="string-percentages"),
    pytest.param(with_strategy(everyone(7.5), "NUMBER", 1), id="number-percentage"),
    pytest.param(with_strategy(everyone('{"b": 2}'), "JSON", '{"a": 1}'), id="json-percentage"),
    pytest.param(with_strategy({"id": "s", "percentage": 12.5, "value": True}),
                 id="percentage-float"),
    pytest.param(with_strategy({"id": "s", "percentage": None, "percentageAttributes": None,
                                "attributes": None, "value": None, "name": None}),
                 id="strategy-all-null"),
    pytest.param(with_attr(attr("DATE", "LESS", ["2030-01-01"], field="now")), id="now-date"),
    pytest.param(with_attr(attr("DATETIME", "GREATER", ["2001-01-01T00:00:00Z"], field="now")),
                 id="now-datetime"),
    pytest.param(with_attr(attr("STRING", "EQUALS", None)), id="values-null"),
    pytest.param(with_attr(attr("STRING", "EQUALS", [])), id="values-empty"),
    pytest.param(with_attr(attr("STRING", "EQUALS", ["a", None, 5, 1.5, True])),
                 id="string-values-scalars-and-null"),
    pytest.param(with_attr(attr("NUMBER", "GREATER", [1, None, "2.5", -3])),
                 id="number-values-numeric-strings-and-null"),
    pytest.param(with_attr(attr("NUMBER", "STARTS_WITH", ["1", 2, "x"])), id="number-as-text"),
    pytest.param(with_attr(attr("BOOLEAN", "EQUALS", ["true"])), id="boolean-values-string"),
    pytest.param(with_attr(attr("BOOLEAN", "NOT_EQUALS", [False])), id="boolean-values-bool"),
    pytest.param(with_attr(attr("BOOLEAN", "GREATER", [])), id="boolean-unread-conditional"),
    pytest.param(with_attr(attr("SEMANTIC_VERSION", "GREATER_EQUALS",
                                ["1.2", "v1.2.3", "2.0.0-SNAPSHOT", "7", None, "1.2.3.4"])),
                 id="semver-loose-forms"),
    pytest.param(with_attr(attr("SEMANTIC_VERSION", "REGEX", ["not-a-version"])),
                 id="semver-unread-conditional"),
    pytest.param(with_attr(attr("IP_ADDRESS", "INCLUDES", ["::1", "fe80::1%eth0", "10.1.0.0/16"])),
                 id="ip-v6-scope-and-cidr"),
    pytest.param(with_attr(attr("IP_ADDRESS", "STARTS_WITH", ["not-an-ip"])),
                 id="ip-unread-conditional"),
    pytest.param(with_attr(attr("STRING", "REGEX", ["(.*)gold(.*)", r"^\d{3}$"])), id="regex"),
    pytest.param(feature("BOOLEAN", True, strategies=[
        {"id": "s1", "value": False, "attributes": [
            attr("STRING", "INCLUDES", ["alpha"], field="userkey"),
            attr("STRING", "EQUALS", ["nz"], field="country"),
            attr("SEMANTIC_VERSION", "LESS", ["3.0.0"], field="version"),
            attr("STRING", "EXCLUDES", ["watch"], field="device")]}]),
        id="well-known-field-names"),
    # other SDKs and newer Edge versions add fields: never rejected, whatever they hold
    pytest.param(feature("BOOLEAN", True, fp={"owner": "team-a"}, v="s1", environmentId="e1",
                         zz_new=[{"x": None}], strategies=[
                             {"id": "s", "sortOrder": 2, "zz": {}, "value": False, "attributes": [
                                 attr("STRING", "EQUALS", ["a"], array=True, value="a",
                                      zz=[1, [2]])]}]),
                 id="unknown-extra-fields"),
    *each_conditional_and_field_type(),
]

# -- rejections: (state, reason fragment, does the SDK really raise on it?) ------------------

RAISES, SHAPE_ONLY = True, False


def without(state: State, key: str) -> State:
    return {k: v for k, v in state.items() if k != key}


PERCENT = with_strategy(everyone(False))

REJECTED: list[Any] = [
    pytest.param(["not", "an", "object"], "must be an object", RAISES, id="not-an-object"),
    pytest.param(without(PERCENT, "id"), "id: must be a non-empty string", RAISES, id="id-missing"),
    pytest.param(dict(PERCENT, id=17), "id: must be a non-empty string", RAISES, id="id-int"),
    pytest.param(dict(PERCENT, id="ab\ud800"), "id: not valid UTF-8", RAISES, id="id-surrogate"),
    pytest.param(dict(PERCENT, id=""), "id: must be a non-empty string", SHAPE_ONLY, id="id-empty"),
    pytest.param(feature(key=["k"]), "key: must be a non-empty string", RAISES, id="key-list"),
    pytest.param(feature(key="k\ud800"), "key: not valid UTF-8", RAISES, id="key-surrogate"),
    pytest.param(without(feature(), "key"), "key: must be a non-empty string", SHAPE_ONLY,
                 id="key-missing"),
    pytest.param(without(feature(), "version"), "version: must be an integer", RAISES,
                 id="version-missing"),
    pytest.param(feature(version="3"), "version: must be an integer", RAISES, id="version-string"),
    pytest.param(feature(version=True), "version: must be an integer, found boolean", SHAPE_ONLY,
                 id="version-bool"),
    pytest.param(feature(version=1.5), "version: must be an integer", SHAPE_ONLY,
                 id="version-float"),
    pytest.param(feature(version=-1), "version: out of range", SHAPE_ONLY, id="version-negative"),
    pytest.param(feature(version=2**63), "version: out of range", SHAPE_ONLY, id="version-huge"),
    pytest.param(feature("FLAG"), 'type: unknown value "FLAG"', SHAPE_ONLY, id="type-unknown"),
    pytest.param(feature(5), "type: must be a string", SHAPE_ONLY, id="type-int"),
    pytest.param(feature(l="false"), "l: must be a boolean", SHAPE_ONLY, id="l-string"),
    pytest.param(feature("BOOLEAN", "true"), "value: must be a boolean", SHAPE_ONLY,
                 id="boolean-value-string"),
    pytest.param(feature("STRING", 5), "value: must be a string", SHAPE_ONLY,
                 id="string-value-int"),
    pytest.param(feature("NUMBER", "5"), "value: must be a number", SHAPE_ONLY,
                 id="number-value-string"),
    pytest.param(feature("NUMBER", True), "value: must be a number, found boolean", SHAPE_ONLY,
                 id="number-value-bool"),
    pytest.param(feature("NUMBER", float("nan")), "value: must be a finite number", SHAPE_ONLY,
                 id="number-value-nan"),
    pytest.param(feature("JSON", {"a": 1}), "value: must be a string of JSON text", RAISES,
                 id="json-value-object"),
    pytest.param(feature("JSON", 5), "value: must be a string of JSON text", RAISES,
                 id="json-value-number"),
    pytest.param(feature("JSON", "{colour: blue"), "value: not valid JSON text", RAISES,
                 id="json-value-not-json"),
    pytest.param(feature(None, {"a": 1}), "value: must be a string, number or boolean", SHAPE_ONLY,
                 id="typeless-value-object"),
    pytest.param(with_strategy(everyone(True), "NUMBER", 1),
                 "strategies[0].value: must be a number", RAISES, id="number-strategy-value-bool"),
    pytest.param(with_strategy(everyone("lots"), "NUMBER", 1),
                 "strategies[0].value: must be a number", RAISES,
                 id="number-strategy-value-string"),
    pytest.param(with_strategy(everyone(True), "JSON", "{}"),
                 "strategies[0].value: must be a string of JSON text", RAISES,
                 id="json-strategy-value-bool"),
    pytest.param(with_strategy(everyone("{nope"), "JSON", "{}"),
                 "strategies[0].value: not valid JSON text", RAISES, id="json-strategy-value-bad"),
    pytest.param(with_strategy(everyone("yes")), "strategies[0].value: must be a boolean",
                 SHAPE_ONLY, id="boolean-strategy-value-string"),
    pytest.param(with_strategy(everyone(5), "STRING", "x"), "strategies[0].value: must be a string",
                 SHAPE_ONLY, id="string-strategy-value-int"),
    pytest.param(feature(strategies=5), "strategies: must be a list or null, found integer", RAISES,
                 id="strategies-int"),
    pytest.param(feature(strategies="abc"), "strategies: must be a list", RAISES,
                 id="strategies-string"),
    pytest.param(feature(strategies={"s": {}}), "strategies: must be a list", RAISES,
                 id="strategies-object"),
    pytest.param(feature(strategies={}), "strategies: must be a list", SHAPE_ONLY,
                 id="strategies-empty-object"),
    pytest.param(feature(strategies=[5]), "strategies[0]: must be an object", RAISES,
                 id="strategy-int"),
    pytest.param(feature(strategies=[None]), "strategies[0]: must be an object", RAISES,
                 id="strategy-null"),
    pytest.param(with_strategy({"id": 5, "percentage": 0}), "strategies[0].id: must be a string",
                 SHAPE_ONLY, id="strategy-id-int"),
    pytest.param(with_strategy({"name": ["x"]}), "strategies[0].name: must be a string",
                 SHAPE_ONLY, id="strategy-name-list"),
    pytest.param(with_strategy({"percentage": "half"}),
                 "strategies[0].percentage: must be a number", RAISES, id="percentage-word"),
    pytest.param(with_strategy({"percentage": "50"}), "strategies[0].percentage: must be a number",
                 SHAPE_ONLY, id="percentage-digits"),
    pytest.param(with_strategy({"percentage": float("nan")}),
                 "strategies[0].percentage: must be a finite number", RAISES, id="percentage-nan"),
    pytest.param(with_strategy({"percentage": float("inf")}),
                 "strategies[0].percentage: must be a finite number", RAISES, id="percentage-inf"),
    pytest.param(with_strategy({"percentage": [50]}), "strategies[0].percentage: must be a number",
                 RAISES, id="percentage-list"),
    pytest.param(with_strategy({"percentage": True}), "strategies[0].percentage: must be a number",
                 SHAPE_ONLY, id="percentage-bool"),
    pytest.param(with_strategy({"percentage": 10, "percentageAttributes": 5}),
                 "strategies[0].percentageAttributes: must be a list", RAISES, id="pa-int"),
    pytest.param(with_strategy({"percentage": 10, "percentageAttributes": [["company"]]}),
                 "strategies[0].percentageAttributes[0]: must be a string", RAISES,
                 id="pa-nested-list"),
    pytest.param(with_strategy({"percentage": 10, "percentageAttributes": "company"}),
                 "strategies[0].percentageAttributes: must be a list", SHAPE_ONLY, id="pa-string"),
    pytest.param(with_strategy({"percentage": 10, "percentageAttributes": [7]}),
                 "strategies[0].percentageAttributes[0]: must be a string", SHAPE_ONLY,
                 id="pa-int-item"),
    pytest.param(without(PERCENT, "l"), 'strategies[0].percentage: a percentage strategy needs "l"',
                 RAISES, id="l-absent-with-percentage"),
    pytest.param(with_strategy({"attributes": 5}), "strategies[0].attributes: must be a list",
                 RAISES, id="attributes-int"),
    pytest.param(with_strategy({"attributes": "abc"}), "strategies[0].attributes: must be a list",
                 RAISES, id="attributes-string"),
    pytest.param(with_strategy({"attributes": {}}), "strategies[0].attributes: must be a list",
                 SHAPE_ONLY, id="attributes-empty-object"),
    pytest.param(with_attr(5), "strategies[0].attributes[0]: must be an object", RAISES,
                 id="attribute-int"),
    pytest.param(with_attr(attr("STRING", "FOO", ["a"])),
                 'strategies[0].attributes[0].conditional: unknown value "FOO"', RAISES,
                 id="conditional-unknown"),
    pytest.param(with_strategy({"attributes": [attr("STRING", "EQUALS", ["alpha"]),
                                               attr("STRING", "FOO", ["b"])]}),
                 'strategies[0].attributes[1].conditional: unknown value "FOO"', RAISES,
                 id="conditional-unknown-second"),
    pytest.param(with_attr(without(attr("STRING", "EQUALS", ["a"]), "conditional")),
                 "strategies[0].attributes[0].conditional: must be a string", RAISES,
                 id="conditional-missing"),
    pytest.param(with_attr(attr("NUMBER", "FOO", [5])),
                 'strategies[0].attributes[0].conditional: unknown value "FOO"', SHAPE_ONLY,
                 id="conditional-unknown-number-matcher-swallows-it"),
    pytest.param(with_attr(without(attr("STRING", "EQUALS", ["a"]), "fieldName")),
                 "strategies[0].attributes[0].fieldName: must be a string", RAISES,
                 id="fieldname-missing"),
    pytest.param(with_attr(attr("STRING", "EQUALS", ["a"], field=["f"])),
                 "strategies[0].attributes[0].fieldName: must be a string", RAISES,
                 id="fieldname-list"),
    pytest.param(with_attr(attr("COLOUR", "EQUALS", ["a"])),
                 'strategies[0].attributes[0].type: unknown value "COLOUR"', RAISES,
                 id="field-type-unknown"),
    pytest.param(with_attr(without(attr("STRING", "EQUALS", ["a"]), "type")),
                 "strategies[0].attributes[0].type: must be a string", RAISES,
                 id="field-type-missing"),
    pytest.param(with_attr(attr("STRING", "EQUALS", 5)),
                 "strategies[0].attributes[0].values: must be a list or null, found integer",
                 RAISES, id="values-int"),
    pytest.param(with_attr(attr("BOOLEAN", "EQUALS", {"0": True})),
                 "strategies[0].attributes[0].values: must be a list", RAISES, id="values-object"),
    pytest.param(with_attr(attr("STRING", "EQUALS", "alpha")),
                 "strategies[0].attributes[0].values: must be a list", SHAPE_ONLY,
                 id="values-string"),
    pytest.param(with_attr(attr("BOOLEAN", "EQUALS", [])),
                 "strategies[0].attributes[0].values: must not be empty", RAISES,
                 id="boolean-values-empty"),
    pytest.param(with_attr(attr("BOOLEAN", "EQUALS", [1])),
                 "strategies[0].attributes[0].values[0]: must be a boolean or a string",
                 SHAPE_ONLY, id="boolean-values-number"),
    pytest.param(with_attr(attr("NUMBER", "EQUALS", [[5]])),
                 "strategies[0].attributes[0].values[0]: must be a number", RAISES,
                 id="number-values-list"),
    pytest.param(with_attr(attr("NUMBER", "LESS", [10**400])),
                 "strategies[0].attributes[0].values[0]: must be a finite number", RAISES,
                 id="number-values-overflow"),
    pytest.param(with_attr(attr("NUMBER", "EQUALS", ["five"])),
                 'strategies[0].attributes[0].values[0]: not a number: "five"', SHAPE_ONLY,
                 id="number-values-word"),
    pytest.param(with_attr(attr("NUMBER", "EQUALS", [True])),
                 "strategies[0].attributes[0].values[0]: must be a number, found boolean",
                 SHAPE_ONLY, id="number-values-bool"),
    # a REGEX pattern that does not compile is no reason: fh_prefork.regex makes it cost only
    # its strategy (tests/unit/test_regex.py)
    pytest.param(with_attr(attr("SEMANTIC_VERSION", "GREATER", ["latest"])),
                 'strategies[0].attributes[0].values[0]: not a semantic version: "latest"', RAISES,
                 id="semver-word"),
    pytest.param(with_attr(attr("SEMANTIC_VERSION", "EQUALS", [True])),
                 'strategies[0].attributes[0].values[0]: not a semantic version: "True"', RAISES,
                 id="semver-bool"),
    pytest.param(with_attr(attr("IP_ADDRESS", "EQUALS", ["192.168.1.5/24"])),
                 "strategies[0].attributes[0].values[0]: not an IP address or network", RAISES,
                 id="ip-host-bits-set"),
    pytest.param(with_attr(attr("IP_ADDRESS", "EXCLUDES", ["intranet"])),
                 "strategies[0].attributes[0].values[0]: not an IP address or network", RAISES,
                 id="ip-word"),
    pytest.param(with_attr(attr("IP_ADDRESS", "EQUALS", [None])),
                 "strategies[0].attributes[0].values[0]: must be an IP address", RAISES,
                 id="ip-null"),
    pytest.param(with_attr(attr("STRING", "EQUALS", [["a"]])),
                 "strategies[0].attributes[0].values[0]: must be a string, number or boolean",
                 SHAPE_ONLY, id="string-values-nested-list"),
]

# -- driving the real SDK --------------------------------------------------------------------

SUPPLIED = {"STRING": ["alpha", "zz"], "DATE": ["2019-02-01"], "DATETIME": ["2019-02-01T00:00:00Z"],
            "NUMBER": ["5", "-1.5"], "SEMANTIC_VERSION": ["2.0.3", "0.1.0"],
            "BOOLEAN": ["true", "false"], "IP_ADDRESS": ["10.0.0.1", "::1"]}
TOP_READS = ("get_value", "get_flag", "get_boolean", "get_string", "get_number", "get_raw_json",
             "is_set", "is_enabled", "exists", "locked", "id", "get_version")


def _strategies(state: Any) -> list[Any]:
    found = state.get("strategies") if isinstance(state, dict) else None
    return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []


def _supplied(state: Any) -> dict[str, list[str]]:
    """A value of the declared field type for every attribute, so every matcher runs."""
    names: dict[str, list[str]] = {}
    for strategy in _strategies(state):
        attributes = strategy.get("attributes")
        for attribute in attributes if isinstance(attributes, list) else []:
            if isinstance(attribute, dict) and isinstance(attribute.get("fieldName"), str):
                ftype = attribute.get("type")
                known = SUPPLIED.get(ftype) if isinstance(ftype, str) else None
                names.setdefault(attribute["fieldName"], known or ["alpha"])
        pas = strategy.get("percentageAttributes")
        for name in pas if isinstance(pas, list) else []:
            if isinstance(name, str):
                names.setdefault(name, ["acme"])
    return names


def _contexts(repo: FeatureHubRepository, state: Any) -> Iterator[ClientEvalFeatureContext]:
    names = _supplied(state)
    for user in (None, "user-1", "user-2", "user-3"):
        for index in range(2):
            ctx = ClientEvalFeatureContext(repo, None)
            if user is not None:
                ctx.user_key(user)
            for name, values in names.items():
                if index or user is None:
                    ctx.attribute_values(name, [values[index % len(values)]])
            yield ctx


def _evaluate(state: Any) -> None:
    """Everything the SDK does with a state: store, update, and read it in every way."""
    repo = FeatureHubRepository()
    repo.register_interceptor(EnvironmentInterceptor())
    repo.notify("feature", state)
    key = state.get("key") if isinstance(state, dict) else None
    if not isinstance(key, str) or key not in repo.features:
        return
    repo.notify("features", [state])  # same version again: compares values
    seeded = FeatureHubRepository()
    seeded.notify("feature", {"id": "seed", "key": key, "l": False, "version": 0,
                              "type": "STRING", "value": "seed"})
    seeded.notify("feature", state)  # a newer state replacing one already held
    repo.extract_feature_state()
    for read in TOP_READS:
        getattr(repo.feature(key), read)
    for ctx in _contexts(repo, state):
        held = ctx.feature(key)
        for read in TOP_READS:
            getattr(held, read)
        ctx.get_json(key)


def sdk_error(state: Any) -> BaseException | None:
    try:
        _evaluate(copy.deepcopy(state))
    except Exception as exc:  # what the SDK raised is the result
        return exc
    return None


@pytest.fixture(autouse=True)
def _interceptor_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment interceptor on, so key lookups in os.environ are exercised too."""
    monkeypatch.setenv("FEATUREHUB_OVERRIDE_FEATURES", "true")


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ACCEPTED)
def test_edge_shapes_are_accepted(state: State) -> None:
    assert shape_problem(state) is None


@pytest.mark.parametrize("state", ACCEPTED)
def test_accepted_shapes_never_make_the_sdk_raise(state: State) -> None:
    assert sdk_error(state) is None


@pytest.mark.parametrize(("state", "reason", "raises"), REJECTED)
def test_rejected_with_a_reason_naming_the_field(state: Any, reason: str, raises: bool) -> None:
    problem = shape_problem(state)
    assert problem is not None and reason in problem, problem


@pytest.mark.parametrize(("state", "reason", "raises"), REJECTED)
def test_rejections_marked_raises_guard_a_real_sdk_failure(
    state: Any, reason: str, raises: bool
) -> None:
    error = sdk_error(state)
    if raises:
        assert error is not None, "the SDK tolerates this state: the row must say SHAPE_ONLY"
    else:
        assert error is None, f"the SDK raises {error!r}: the row must say RAISES"


def test_every_failure_class_the_sdk_has_is_covered() -> None:
    """The table hits each exception class found by fuzzing the SDK, so none goes unguarded."""
    found = {type(sdk_error(p.values[0])).__name__ for p in REJECTED if p.values[2]}
    assert found >= {"AttributeError", "TypeError", "ValueError", "IndexError", "KeyError",
                     "OverflowError", "JSONDecodeError", "UnicodeEncodeError"}, found


def test_the_brief_example_reason() -> None:
    state = with_strategy({"attributes": [attr("STRING", "EQUALS", ["a"]),
                                          attr("STRING", "FOO", ["b"])]})
    state["strategies"].insert(0, everyone(False))
    assert shape_problem(state) == 'strategies[1].attributes[1].conditional: unknown value "FOO"'


@pytest.mark.parametrize("junk", [
    None, 0, "x", [], {}, {"id": []}, {"id": "i", "key": "k", "version": 1, "type": ["BOOLEAN"]},
    feature(strategies=[{"attributes": [{"conditional": ["EQUALS"], "type": {}}]}]),
    feature(strategies=[{"attributes": [attr("NUMBER", "EQUALS", [10**5000])]}]),
    feature(strategies=[{"attributes": [attr("SEMANTIC_VERSION", "EQUALS", ["9" * 5000])]}]),
    feature(strategies=[{"attributes": [attr("STRING", "REGEX", ["(" * 2000 + ")" * 2000])]}]),
    feature("JSON", "[" * 100000),
])
def test_junk_never_makes_the_check_itself_raise(junk: Any) -> None:
    assert isinstance(shape_problem(junk), (str, type(None)))


def _sdk_parses_semver(text: str) -> bool:
    try:
        make_semver(text, True)
    except ValueError:
        return False
    return True


def test_semantic_versions_are_judged_exactly_like_the_sdks_node_semver() -> None:
    rng = random.Random(20240611)
    alphabet = "0123456789.-+vV= \tabxX!\n\u0663"
    samples = ["1.2.3", "1.2", "1", "v1.2.3", "=1.2.3", " 1.2.3 ", "1.2.3-beta.1", "1.2.3+b.5",
               "1.2.3.4", "1.0.0alpha1", "2.0.0-SNAPSHOT", "1.2-3", "1.2.x", "01.2.3", "",
               "abc", "1.2!", "1e+20", "True", "nan", "9" * 5000 + ".0.0", "1.2." + "9" * 5000]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
                for _ in range(5000)]
    for text in samples:
        state = with_attr(attr("SEMANTIC_VERSION", "EQUALS", [text]))
        accepted = shape_problem(state) is None
        assert accepted == _sdk_parses_semver(text), repr(text)


def test_unknown_fields_are_never_a_reason() -> None:
    state = feature(strategies=[{"id": "s", "value": False,
                                 "attributes": [attr("STRING", "EQUALS", ["a"])]}])
    for target in (state, state["strategies"][0], state["strategies"][0]["attributes"][0]):
        for odd in (None, 5, "x", [1, [2]], {"k": float("nan")}, "\ud800"):
            target["zz_future_field"] = odd
            assert shape_problem(state) is None
        del target["zz_future_field"]


def test_reasons_are_short_and_printable() -> None:
    for param in REJECTED:
        problem = shape_problem(param.values[0])
        assert problem is not None and len(problem) < 160 and problem.isprintable(), problem
        assert re.match(r"^[\w\[\]. ]+", problem)


# -- the quick path for plain states ---------------------------------------------------------

#: Values of every JSON kind (and the edges of each) for the fields the quick path reads.
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2**63 - 1, 2**63, -(2**63), 10**400, -(10**400), 2**1000 - 1,
    2**1000, 0.5, -0.0, float("inf"), float("-inf"), float("nan"), 1e308, "", "x", "é", "\ud800",
    "{}", "[1, 2]", "not json", [], [1], [{}], {}, {"a": 1}, "BOOLEAN", "STRING", "NUMBER",
    "JSON", "boolean", "OTHER",
]


def _plain_variants(rng: random.Random, n: int) -> Iterator[State]:
    """Plain states with one to three fields (or unknown ones) set to any odd value."""
    fields = ["id", "key", "version", "type", "l", "value", "strategies", "zz_future"]
    for _ in range(n):
        state = feature(rng.choice(sorted(FEATURE_TYPES_USED)), rng.choice(ODD_VALUES))
        for name in rng.sample(fields, rng.randint(1, 3)):
            if rng.random() < 0.15:
                state.pop(name, None)
            else:
                state[name] = rng.choice(ODD_VALUES)
        yield state


FEATURE_TYPES_USED = {"BOOLEAN", "STRING", "NUMBER", "JSON"}


def test_the_quick_path_never_vouches_for_what_the_full_check_refuses() -> None:
    """Every table state, every junk shape and 20,000 plain states with odd fields: where the
    quick path says usable the full check agrees, and shape_problem answers as the full check
    (the same reason, word for word)."""
    rng = random.Random(20261206)
    states: list[Any] = [*ACCEPTED, *(p.values[0] for p in REJECTED)]
    states += list(_plain_variants(rng, 20_000))
    quick = 0
    for state in states:
        full = _shape_problem(state)
        if isinstance(state, dict) and plainly_usable(state):
            quick += 1
            assert full is None, (state, full)
        assert shape_problem(state) == full, state
    assert quick > 500, "the quick path took too few states to prove anything"


def test_the_quick_path_takes_the_states_edge_sends_most() -> None:
    """Plain flags, strings and numbers, with or without type and l, and empty strategies."""
    for state in [feature(), feature("STRING", "text"), feature("NUMBER", 1.5),
                  feature("NUMBER", -3), feature(None, "x"), feature("BOOLEAN", None),
                  feature(strategies=[]), feature(strategies=None), feature(l=None)]:
        assert plainly_usable(state), state
    for state in [feature("JSON", "{}"), feature(strategies=[everyone(True)]),
                  feature(id="\u00e9"), feature("NUMBER", True), feature("BOOLEAN", 1)]:
        assert not plainly_usable(state), state
