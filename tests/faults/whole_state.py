"""The fault suite's whole-state waits now live in tests/support/state.py (the suite's one
whole-state helper); these names are kept for modules written against this path."""

from __future__ import annotations

from tests.support.state import (
    ENV,
    StoreReader,
    data_key,
    file_reader,
    losses,
    many_features,
    memcached_reader,
    redis_reader,
    short,
    short_verify_env,
    verify_period,
    wait_converged,
)

__all__ = [
    "data_key",
    "ENV",
    "file_reader",
    "losses",
    "many_features",
    "memcached_reader",
    "redis_reader",
    "short",
    "short_verify_env",
    "StoreReader",
    "verify_period",
    "wait_converged",
]
