"""Whole-state waits for the fault suite: every feature, every worker, the store, against Edge.

A fault test proves "nothing lost" on the whole state, never on the one flag it
changed: after the fault clears, every worker serves exactly Edge's features
(none missing, none extra, none older) and the store holds exactly them.
``wait_converged`` is that check, as one bounded wait that fails with
``describe()``; ``never_lose`` also fails the moment a worker drops a feature
it held and Edge still has (a transient loss is served to requests too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.procs import hold_for
from tests.support.state import (
    State,
    converged,
    describe,
    edge_state,
    file_state,
    memcached_state,
    redis_state,
    worker_states,
)

#: The environment id of tests.servers.conftest.API_KEY: data key is f"{prefix}_{ENV}".
ENV = "env-srv"

StoreReader = Callable[[], State | None]


def data_key(prefix: str) -> str:
    return f"{prefix}_{ENV}"


def many_features(n: int = 8) -> list[dict[str, Any]]:
    """FLAG and OTHER at version 1 (as the ``edge`` fixture has them) plus ``n - 2`` more of
    every type, so a lost feature shows up among several, not as the only other one."""
    extra = []
    kinds = [("BOOLEAN", True), ("STRING", "blue"), ("NUMBER", 42.5), ("JSON", '{"a": 1}')]
    for i in range(n - 2):
        kind, value = kinds[i % len(kinds)]
        extra.append(make_feature(f"F{i + 3:02d}", value, 1 + i % 3, type=kind))
    return [make_feature("FLAG", True, 1), make_feature("OTHER", False, 1), *extra]


def memcached_reader(address: str, prefix: str) -> StoreReader:
    """The store as a fresh client sees it (``address`` may list several servers)."""
    return lambda: memcached_state(address, data_key(prefix))


def redis_reader(url: str, prefix: str) -> StoreReader:
    return lambda: redis_state(url, data_key(prefix))


def file_reader(folder: str | Path, prefix: str) -> StoreReader:
    return lambda: file_state(folder, data_key(prefix))


def short(text: str, width: int = 700) -> str:
    """describe() of a large state names thousands of keys: keep each line readable."""
    return "\n".join(line if len(line) <= width else line[:width] + f"... ({len(line)} chars)"
                     for line in text.splitlines())


def losses(expected: State, workers: Mapping[int, State],
           keep: Mapping[int, Collection[str]]) -> dict[int, list[str]]:
    """Per worker of ``keep``: the keys it held before and lacks now although Edge has them."""
    out = {}
    for pid, keys in keep.items():
        held = workers.get(pid)
        if held is None:
            continue
        lost = sorted(k for k in keys if k in expected and k not in held)
        if lost:
            out[pid] = lost
    return out


def wait_converged(edge: EdgeSimulator, cluster: Cluster | list[Cluster], store: StoreReader,
                   timeout: float, what: str, *, workers: int | None = None,
                   never_lose: Mapping[int, Collection[str]] | None = None,
                   interval: float = 0.1, stay: float = 0.0) -> dict[int, State]:
    """Wait (bounded) until every worker and the store hold exactly Edge's state.

    ``workers``: how many workers must answer (default: the cluster's size), so
    an empty or half-started cluster cannot converge vacuously.
    ``never_lose``: pid -> keys that worker held before the fault; the wait
    fails at once if one of them goes missing while Edge still has it.
    ``stay``: once agreed, wait this long and require the agreement again: a
    state that agrees for a moment and is then judged away is no convergence
    (pass ``STAY``: the Edge-absence grace and a verify read).
    """
    states = _converge(edge, cluster, store, timeout, what, workers, never_lose, interval)
    if stay <= 0:
        return states
    hold_for(stay)
    return _converge(edge, cluster, store, max(5.0, stay), f"{what}, still {stay:.1f} s later",
                     workers, never_lose or {pid: list(s) for pid, s in states.items()},
                     interval)


def _converge(edge: EdgeSimulator, cluster: Cluster | list[Cluster], store: StoreReader,
              timeout: float, what: str, workers: int | None,
              never_lose: Mapping[int, Collection[str]] | None,
              interval: float) -> dict[int, State]:
    clusters = cluster if isinstance(cluster, list) else [cluster]
    wanted = workers if workers is not None else sum(c.workers for c in clusters)
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        expected = edge_state(edge)
        states: dict[int, State] = {}
        try:
            for c in clusters:
                states.update(worker_states(c, timeout=max(2.0, min(10.0, deadline
                                                                    - time.monotonic()))))
        except TimeoutError as err:  # a worker exiting or booting: ask again
            last = f"workers did not answer: {err}"
            states = {}
        held = store()
        if states:
            lost = losses(expected, states, never_lose or {})
            if lost:
                raise AssertionError(
                    f"{what}: worker(s) dropped features Edge still has: {lost}\n"
                    + short(describe(expected, states, held)))
            if len(states) >= wanted and converged(expected, states, held):
                return states
            last = (f"{len(states)} of {wanted} workers answered\n" if len(states) < wanted
                    else "") + short(describe(expected, states, held))
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not converged to Edge's {len(expected)} features "
                                 f"within {timeout:.1f} s:\n{last}")
        time.sleep(interval)  # polling interval of a bounded wait


def short_verify_env() -> dict[str, str]:
    """Environment that shortens the store's verify period, if a setting offers one."""
    from fh_prefork.settings import SETTINGS

    found = next((s for s in SETTINGS if "verify" in s.name), None)
    return {found.env: "2"} if found is not None else {}


def verify_period(refresh: float) -> float:
    """Seconds between two full reads of the store a worker makes even when nothing changed.

    The setting shortened by ``short_verify_env`` if there is one (2 s or 2 ticks,
    whichever is longer), else the store's default ``verify_every`` ticks.
    """
    if short_verify_env():
        return max(2.0, 2 * refresh * 1.2)
    from fh_prefork.store.options import SessionStoreOptions

    defaults = SessionStoreOptions()
    for f in fields(defaults):
        if f.name.startswith("verify"):
            value = getattr(defaults, f.name)
            return float(value) if "second" in f.name else value * refresh * 1.2
    return 12 * refresh * 1.2
