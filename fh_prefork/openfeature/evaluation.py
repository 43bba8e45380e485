"""Resolving one OpenFeature flag from a worker's FeatureHub repository, as the SDK would.

Kept apart from the provider's lifecycle: this is pure, in memory, and runs on
every flag read, so it holds no lock, thread or I/O. Rollout strategies go
through the FeatureHub SDK's own matcher, so a value is the one the SDK gives
for the same context.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any, TypeVar

from featurehub_sdk.client_context import ClientContext
from featurehub_sdk.interceptors import InterceptorValue
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagMetadata, FlagResolutionDetails, FlagValueType, Reason

__all__ = ["ObjectValue", "error", "evaluate", "fh_context", "feature_metadata"]

#: The FeatureHub feature type each OpenFeature resolution reads.
_TYPE_OF = {"boolean": "BOOLEAN", "string": "STRING", "integer": "NUMBER", "float": "NUMBER",
            "object": "JSON"}

# Enum members looked up once: attribute access on an Enum class costs more than a global
STATIC, _SPLIT, _TARGETING_MATCH, _DEFAULT, _ERROR, STALE_REASON = (
    Reason.STATIC, Reason.SPLIT, Reason.TARGETING_MATCH, Reason.DEFAULT, Reason.ERROR,
    Reason.STALE)

T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


def evaluate(kind: str, key: str, default: Any, context: EvaluationContext | None,
              repository: Any, holder: Any, state: dict[str, Any],
              static: str = STATIC) -> FlagResolutionDetails[Any]:
    """Resolve one existing feature the way FeatureHubSDK's ``FeatureStateHolder`` does.

    ``static``: the reason of a value no strategy chose (STALE while the provider is).
    A percentage strategy the context has no key for (no targeting key, no ``session``)
    is TARGETING_KEY_MISSING, unless another strategy matched: the SDK would skip it
    and serve the feature's value to every user, which a percentage rollout never means.
    """
    feature_type = state.get("type") or _infer_type(state.get("value"))
    metadata = feature_metadata(key, state, feature_type)
    wanted = _TYPE_OF[kind]
    if feature_type != wanted:
        return error(default, ErrorCode.TYPE_MISMATCH,
                      f"{key!r} is a {feature_type} feature; {kind} asks for {wanted}", metadata)
    raw: Any = state.get("value")
    reason: str = static
    variant: str | None = None
    intercepted = None if state.get("l") else repository.find_interceptor(key)
    if intercepted is not None:
        raw = intercepted.cast(feature_type)
        metadata["intercepted"] = True
    else:
        strategies = holder._encoded_strategies
        if strategies:
            fh = fh_context(repository, context)
            applied = repository.apply(_indexed(strategies), key, state["id"], fh)
            if applied.matched:
                strategy = strategies[applied.value]
                raw = _cast(strategy.value, feature_type)
                reason = _TARGETING_MATCH if strategy.has_attributes else _SPLIT
                variant = strategy.name or strategy.id
                if strategy.id:
                    metadata["strategy_id"] = str(strategy.id)
            elif fh.default_percentage_key is None and any(
                    s.percentage != 0 and not s.has_percentage_attributes for s in strategies):
                return error(default, ErrorCode.TARGETING_KEY_MISSING,
                              f"{key!r} has a percentage rollout: it needs a targeting key "
                              "(or a 'session' attribute) to choose", metadata)
    if raw is None or (raw == "" and feature_type == "JSON"):  # no value: the caller's default
        return FlagResolutionDetails(value=default, reason=_DEFAULT, variant=variant,
                                     flag_metadata=metadata)
    value, problem, code = _convert(kind, raw)
    if problem is not None:
        return error(default, code, f"{key!r}: {problem}", metadata)
    return FlagResolutionDetails(value=value, reason=reason, variant=variant,
                                 flag_metadata=metadata)


def _convert(kind: str, raw: Any) -> tuple[Any, str | None, ErrorCode]:
    """The OpenFeature value of a FeatureHub value, or why there is none (and its error code)."""
    mismatch = ErrorCode.TYPE_MISMATCH
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw, None, mismatch
        return None, f"value {raw!r} is not a boolean", mismatch
    if kind == "string":
        if isinstance(raw, str):
            return raw, None, mismatch
        return None, f"value {raw!r} is not a string", mismatch
    if kind in ("integer", "float"):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return None, f"value {raw!r} is not a number", mismatch
        if kind == "float":
            return float(raw), None, mismatch
        if isinstance(raw, float):
            if not raw.is_integer():
                return None, f"value {raw!r} is not an integer", mismatch
            return int(raw), None, mismatch
        return raw, None, mismatch
    if not isinstance(raw, str):
        return None, f"value {raw!r} is not JSON text", ErrorCode.PARSE_ERROR
    try:
        parsed = json.loads(raw)
    except ValueError as err:
        return None, f"value is not valid JSON: {err}", ErrorCode.PARSE_ERROR
    if not isinstance(parsed, (dict, list)):
        return None, f"JSON value {raw[:50]!r} is not an object or an array", mismatch
    return parsed, None, mismatch


#: id(strategy list) -> (that list, copies of its strategies whose value is their position).
#: Holding the list keeps its id from being reused while cached; cleared when it grows past
#: _INDEXED_MAX (every feature update brings a new list). A plain dict: a weak-keyed one
#: makes a weak reference on every lookup, which costs more than the evaluation saves.
_INDEXED: dict[int, tuple[list[Any], list[Any]]] = {}
_INDEXED_MAX = 4096


def _indexed(strategies: list[Any]) -> list[Any]:
    """Copies of ``strategies`` whose value is their index, made once per strategy list.

    The SDK's matcher says only that a strategy matched and gives its value;
    run on these copies, its value names the strategy applied, for the
    variant and reason, in the one run that also gives the value.
    """
    cached = _INDEXED.get(id(strategies))
    if cached is not None and cached[0] is strategies:
        return cached[1]
    copies = []
    for index, strategy in enumerate(strategies):
        twin = copy.copy(strategy)
        twin._attr = {**strategy._attr, "value": index}
        copies.append(twin)
    if len(_INDEXED) >= _INDEXED_MAX:
        _INDEXED.clear()
    _INDEXED[id(strategies)] = (strategies, copies)
    return copies


def fh_context(repository: Any, context: EvaluationContext | None) -> ClientContext:
    """The FeatureHub client context for an OpenFeature evaluation context.

    The targeting key is the user key (``userkey``); every attribute is passed
    through under its own name (``country``, ``device``, ``platform``,
    ``version``, ``session``, anything else). Values become the strings the
    SDK's matchers compare: booleans ``true``/``false``, numbers ``str()``,
    dates ISO 8601, enums their value, lists one string per item. Nested
    mappings cannot be FeatureHub attributes and are left out.
    """
    fh = ClientContext(repository)
    if context is None:
        return fh
    for name, value in context.attributes.items():
        values = _attribute_values(value)
        if values:
            fh.attribute_values(name, values)
    if context.targeting_key:
        fh.user_key(context.targeting_key)
    return fh


def _attribute_values(value: Any) -> list[str] | None:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Mapping)):
        one = _scalar(value)
        return None if one is None else [one]
    if isinstance(value, Mapping):
        return None
    values = [_scalar(item) for item in value]
    return [v for v in values if v is not None]


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return None


def _infer_type(value: Any) -> str | None:
    """A feature without a ``type`` (which the SDK tolerates): judge by its value."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, (int, float)):
        return "NUMBER"
    return None


def feature_metadata(key: str, state: dict[str, Any],
              feature_type: str | None = None) -> dict[str, bool | int | float | str]:
    """The feature's key, version, id and type (states in the repository passed the shape
    check: ``id`` is a non-empty string and ``version`` an integer)."""
    meta: dict[str, bool | int | float | str] = {
        "key": key, "version": state.get("version", -1), "id": state.get("id", "")}
    if feature_type:
        meta["type"] = feature_type
    return meta


def _cast(value: Any, feature_type: str) -> Any:
    """The SDK's cast of a strategy value (``InterceptorValue.cast``), skipped when a no-op."""
    if isinstance(value, str) and feature_type in ("STRING", "JSON"):
        return value
    if isinstance(value, bool) and feature_type == "BOOLEAN":
        return value
    return InterceptorValue(value).cast(feature_type)


def error(default: T, code: ErrorCode, message: str,
           metadata: FlagMetadata | None = None) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(value=default, reason=_ERROR, error_code=code,
                                 error_message=message, flag_metadata=metadata or {})
