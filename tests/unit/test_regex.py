"""fh_prefork.regex: REGEX strategies on RE2, a refused pattern costs only its strategy."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import pytest

from fh_prefork import regex
from fh_prefork.feature_shape import shape_problem
from fh_prefork.listener import ListeningRepository
from fh_prefork.testing.edge_simulator import make_feature

CATASTROPHIC = r"^(a+)+$"


def regex_state(patterns: list[Any], field_type: str = "STRING", version: int = 1,
                extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    state = make_feature("REGEXED", False, version)
    state["strategies"] = [{
        "id": "s1", "name": "by regex", "value": True,
        "attributes": [{"conditional": "REGEX", "fieldName": "userkey", "type": field_type,
                        "values": patterns}],
    }, *(extra or [])]
    return state


def evaluate(repository: ListeningRepository, user: str) -> Any:
    """The flag for ``user`` the way fh_prefork.context() reads it (the SDK's context)."""
    from featurehub_sdk.client_context import ClientEvalFeatureContext
    ctx = ClientEvalFeatureContext(repository, None)
    ctx.user_key(user)
    return ctx.feature("REGEXED").get_flag


@pytest.mark.parametrize("pattern", [r"^([a-z]+\.)+corp\.com$", r"(?:\.[a-z]+)+$",
                                     r"(aa?)*x", CATASTROPHIC, r"(a|aa)+b"])
def test_nested_repeats_no_longer_drop_the_feature(pattern: str) -> None:
    """Before: every one of these was refused by the shape check, dropping the update."""
    assert shape_problem(regex_state([pattern])) is None


@pytest.mark.parametrize("pattern", ["(unclosed", "[0-", r"(a+)\1", r"(?=(a+)+)b"])
def test_even_unusable_patterns_keep_the_feature(pattern: str) -> None:
    assert shape_problem(regex_state([pattern])) is None


def test_engines() -> None:
    assert regex.compiled(r"^([a-z]+\.)+corp\.com$")[1] == "re2"
    assert regex.compiled(CATASTROPHIC)[1] == "re2"
    assert regex.compiled(r"(?=a)a")[1] == "re"          # a lookahead: RE2 refuses, re is safe
    assert regex.compiled(r"(a+)\1")[1] == "none"        # a backreference: no safe engine
    assert regex.compiled("(unclosed")[1] == "none"
    assert regex.regex_search(r"^([a-z]+\.)+corp\.com$", "mail.eu.corp.com")
    assert not regex.regex_search(r"^([a-z]+\.)+corp\.com$", "mail.eu.corp.com.evil")
    assert regex.regex_search(r"(?=ab)a", "xab") and not regex.regex_search(r"(?=ab)a", "xa")
    assert regex.regex_search(5, "x5y")   # a number as pattern: str(), as the SDK does


def test_a_harmless_nested_repeat_applies_in_the_repository() -> None:
    repository = ListeningRepository()
    repository.notify("features", [regex_state([r"^([a-z]+\.)+corp\.com$"])])
    assert evaluate(repository, "mail.eu.corp.com") is True
    assert evaluate(repository, "someone.example.com") is False
    # an update of that feature is applied, never dropped (turning it off takes effect)
    state = regex_state([r"^([a-z]+\.)+corp\.com$"], version=2)
    state["strategies"][0]["value"] = False
    repository.notify("feature", state)
    assert repository.feature("REGEXED").get_version == 2
    assert evaluate(repository, "mail.eu.corp.com") is False


_RUN = """
import json, sys, time
from featurehub_sdk.client_context import ClientEvalFeatureContext
from fh_prefork.listener import ListeningRepository
state, field, values = json.loads(sys.stdin.read())
repository = ListeningRepository()
repository.notify("features", [state])
results = []
started = time.monotonic()
for value in values:
    ctx = ClientEvalFeatureContext(repository, None)
    ctx.attribute_values(field, [value])
    results.append(ctx.feature("REGEXED").get_flag)
print(json.dumps({"results": results, "took": time.monotonic() - started}))
"""


def evaluate_apart(state: dict[str, Any], field: str, values: list[str]) -> dict[str, Any]:
    """Evaluate in a child process killed after a generous bound: ``re`` holds the GIL while
    it backtracks (no thread can time it out), so a hang fails the test instead of hanging
    the suite."""
    try:
        done = subprocess.run([sys.executable, "-c", _RUN],
                              input=json.dumps([state, field, values]),
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("REGEX evaluation did not return within 60 s (ReDoS)")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_catastrophic_pattern_on_a_long_value_returns_fast() -> None:
    """``re`` backtracks 2**n steps here: measured 0.03 s at n = 20, 0.12 s at 22, 0.49 s at
    24, so n = 100000 would never end; RE2 is linear."""
    answer = evaluate_apart(regex_state([CATASTROPHIC]), "userkey",
                            ["a" * 100_000 + "!", "a" * 100_000])
    assert answer["results"] == [False, True], answer
    assert answer["took"] < 5.0, answer


def test_number_fields_use_the_safe_engine() -> None:
    state = regex_state([r"^(1+)+$"], field_type="NUMBER")
    state["strategies"][0]["attributes"][0]["fieldName"] = "age"
    answer = evaluate_apart(state, "age", ["1" * 50_000 + "2", "111", "x"])
    assert answer["results"] == [False, True, False], answer
    assert answer["took"] < 5.0, answer


def test_unusable_pattern_costs_only_its_strategy(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fh_prefork")
    regex.compiled.cache_clear()
    vip = {"id": "s2", "name": "vip", "value": True,
           "attributes": [{"conditional": "EQUALS", "fieldName": "userkey", "type": "STRING",
                           "values": ["vip"]}]}
    repository = ListeningRepository()
    repository.notify("features", [regex_state([r"^((b+)+)\1$"], extra=[vip])])
    assert "REGEXED" in repository.features
    for _ in range(50):
        assert evaluate(repository, "bbbb") is False      # the strategy never matches
    assert evaluate(repository, "vip") is True            # the other strategy is served
    assert evaluate(repository, "someone") is False       # the feature's value is served
    logged = [r.getMessage() for r in caplog.records if "never matches" in r.getMessage()]
    assert len(logged) == 1 and "no bound" in logged[0], logged
