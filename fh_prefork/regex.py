"""REGEX strategies on a linear-time engine: a pattern from FeatureHub never stalls a worker.

The FeatureHub Python SDK matches a REGEX strategy with ``re.search(pattern,
value)`` (``featurehub_sdk.strategy_matchers``: ``StringMatcher`` for string,
date and datetime fields, ``NumberMatcher`` for numbers), on the request path,
with a value the application takes from its user. ``re`` backtracks while
holding the GIL: ``^(a+)+$`` on 30 characters holds the worker for minutes.

Here a pattern runs on Google's RE2 (``google-re2``), whose matching time is
linear in the value's length whatever the pattern. RE2 refuses what it cannot
run in linear time (backreferences, lookarounds, possessive repeats) and a few
spellings (``\\Z``, repeats over 1000); such a pattern runs on ``re`` only when
:func:`fh_prefork.feature_shape.regex_unbounded` finds none of the forms that
make backtracking exponential. A pattern neither accepts (or that does not
compile at all) costs only its strategy: it does not match, and it is logged at a
bounded rate; the feature's value and its other strategies are served.

Semantics are ``re``'s for what both engines accept, with RE2's small
differences: ``$`` matches only at the very end (``re``'s also before a final
newline) and ``\\d``, ``\\w``, ``\\s`` are ASCII classes.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no types
from featurehub_sdk.client_context import (
    RolloutStrategyAttribute,
    RolloutStrategyAttributeConditional,
    RolloutStrategyFieldType,
)
from featurehub_sdk.strategy_matchers import (
    ApplyFeature,
    MatcherRegistry,
    NumberMatcher,
    StrategyMatcher,
    StringMatcher,
)

from .feature_shape import regex_unbounded
from .ratelog import RateLimitedLog

__all__ = ["apply_feature", "regex_search", "SafeMatcherRegistry"]

log = logging.getLogger("fh_prefork")

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False      # RE2 would print every refused pattern to stderr
_OPTIONS.never_capture = True    # groups are never read: a smaller, faster program

#: pattern -> its log (once, then at most once a minute); past _MAX_LOGS patterns, one shared
_refused_logs: dict[str, RateLimitedLog] = {}
_MAX_LOGS = 1024
_shared_log = RateLimitedLog(log, interval=60.0)

_Search = Callable[[str], bool]


def _never(value: str) -> bool:
    return False


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> tuple[_Search, str]:
    """A search function for ``pattern`` and the engine behind it (``re2``, ``re``, ``none``).

    Cached: a strategy's pattern is compiled once per process, and a refused one
    is logged once (then at most once a minute across patterns).
    """
    try:
        rx2 = re2.compile(pattern, _OPTIONS)
    except re2.error:
        pass
    else:
        return (lambda value: rx2.search(value) is not None), "re2"
    try:
        rx = re.compile(pattern)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        _refused(pattern).failure("fh_prefork: REGEX strategy pattern %r does not compile (%s): "
                             "that strategy never matches; the feature is served without it",
                             pattern[:200], exc)
        return _never, "none"
    try:
        unbounded = regex_unbounded(pattern)
    except (RecursionError, ValueError) as exc:   # a parse the check cannot follow
        unbounded = f"cannot be checked ({type(exc).__name__})"
    if unbounded is None:
        return (lambda value: rx.search(value) is not None), "re"
    _refused(pattern).failure("fh_prefork: REGEX strategy pattern %r %s, and RE2 (linear time) "
                         "refuses it: its matching time on a user's value has no bound, so "
                         "that strategy never matches; the feature is served without it",
                         pattern[:200], unbounded)
    return _never, "none"


def _refused(pattern: str) -> RateLimitedLog:
    """The log of one refused pattern: each is said once, a recompile (the cache evicted it)
    at most once a minute; a flood of distinct patterns shares one rate-limited log."""
    found = _refused_logs.get(pattern)
    if found is None:
        if len(_refused_logs) >= _MAX_LOGS:
            return _shared_log
        found = _refused_logs.setdefault(pattern, RateLimitedLog(log, interval=60.0))
    return found


def regex_search(pattern: Any, value: str) -> bool:
    """``re.search(pattern, value) is not None``, in time linear in ``len(value)`` (RE2), or
    bounded by the nested-repeat check (``re``); False for a pattern neither accepts."""
    return compiled(str(pattern))[0](value)


def _regex_match(supplied_value: str, attr: RolloutStrategyAttribute) -> bool:
    return any(regex_search(pattern, supplied_value) for pattern in attr.str_values)


class _StringMatcher(StringMatcher):  # type: ignore[misc]  # the SDK is untyped
    def match(self, supplied_value: str, attr: RolloutStrategyAttribute) -> bool:
        if attr.conditional == RolloutStrategyAttributeConditional.Regex:
            return _regex_match(supplied_value, attr)
        return bool(super().match(supplied_value, attr))


class _NumberMatcher(NumberMatcher):  # type: ignore[misc]
    def match(self, supplied_value: str, attr: RolloutStrategyAttribute) -> bool:
        if attr.conditional == RolloutStrategyAttributeConditional.Regex:
            try:
                float(supplied_value)   # the SDK's number matcher matches numbers only
            except ValueError:
                return False
            return _regex_match(supplied_value, attr)
        return bool(super().match(supplied_value, attr))


_TEXT_FIELDS = frozenset({RolloutStrategyFieldType.String, RolloutStrategyFieldType.Date,
                          RolloutStrategyFieldType.Datetime})


class SafeMatcherRegistry(MatcherRegistry):  # type: ignore[misc]
    """The SDK's matchers, with REGEX conditions on :func:`regex_search`."""

    _string = _StringMatcher()
    _number = _NumberMatcher()

    def find_matcher(self, attr: RolloutStrategyAttribute) -> StrategyMatcher:
        field_type = attr.field_type
        if field_type in _TEXT_FIELDS:
            return self._string
        if field_type == RolloutStrategyFieldType.Number:
            return self._number
        return super().find_matcher(attr)


def apply_feature() -> ApplyFeature:
    """The SDK's strategy evaluation with safe REGEX matching, for a ``FeatureHubRepository``."""
    return ApplyFeature(matcher_repository=SafeMatcherRegistry())
