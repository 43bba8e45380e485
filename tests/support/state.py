"""Whole-state questions: what every worker serves and the store holds, against Edge.

"Nothing lost" is checked on the whole state, never on the one flag a test
changed: every worker and the store must hold exactly Edge's features (none
missing, none extra, none older).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from pymemcache.client.base import Client

from fh_prefork import features as fs
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature

from .procs import hold_for

#: key -> (id, version): the identity of a state, what "equal" means below
State = dict[str, tuple[str, int]]


def edge_state(edge: EdgeSimulator) -> State:
    return {f["key"]: (f["id"], f["version"]) for f in edge.features()}


def worker_states(cluster: Cluster, timeout: float = 20.0) -> dict[int, State]:
    """Worker pid -> every feature it holds (asks every worker once)."""
    return {pid: {k: (v["id"], v["version"]) for k, v in answer["features"].items()}
            for pid, answer in cluster.sample("/state", timeout).items()}


def decode_state(raw: bytes | None) -> State | None:
    if raw is None:
        return None
    return {f["key"]: (f["id"], f["version"]) for f in fs.decode(raw, 10**8).features}


def memcached_state(address: str, data_key: str) -> State | None:
    """The features the memcached data key holds (None: absent or unreachable).

    ``address`` is ``host:port`` or a comma-separated list (a pymemcache
    HashClient then picks the node, as the workers' clients do).
    """
    from pymemcache.client.hash import HashClient

    servers = [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in
                                         address.replace("memcache://", "").split(","))]
    client: Any = (Client(servers[0], connect_timeout=0.5, timeout=0.5) if len(servers) == 1
                   else HashClient(servers, connect_timeout=0.5, timeout=0.5,
                                   retry_attempts=1, dead_timeout=5))
    return _state_at(client, data_key)


def redis_state(url: str, data_key: str) -> State | None:
    """The features the Redis data key holds (None: absent or unreachable)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _state_at(client, data_key)


def _state_at(client: Any, data_key: str) -> State | None:
    """The features ``client`` holds at ``data_key`` (None: absent or unreachable); the
    client is closed either way."""
    try:
        raw = client.get(data_key)
    except Exception:
        return None
    finally:
        client.close()
    return decode_state(raw)


def memcached_flush_all(port: int) -> str:
    """flush_all, as an operator would; '' when done, else a note for the step log."""
    client = Client(("127.0.0.1", port), connect_timeout=1, timeout=1)
    return _closing_after(client, client.flush_all, "flush_all")


def redis_flush_all(url: str) -> str:
    """FLUSHALL, as an operator or a failover to an empty replica would; '' when done."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return _closing_after(client, client.flushall, "flushall")


def _closing_after(client: Any, call: Callable[[], object], name: str) -> str:
    """``call()``, then ``client`` closed: '' when done, else a note naming ``name``."""
    try:
        call()
    except Exception as err:  # reported in the step log, the history goes on
        return f" [{name} failed: {err!r}]"
    finally:
        client.close()
    return ""


def file_state(folder: str | Path, data_key: str) -> State | None:
    path = Path(folder) / f"{data_key}.json"
    try:
        return decode_state(path.read_bytes())
    except FileNotFoundError:
        return None


def differences(expected: State, held: State | None) -> dict[str, list[Any]]:
    """What ``held`` lacks, has extra, or holds at another id or version than ``expected``."""
    held = held or {}
    return {
        "missing": sorted(set(expected) - set(held)),
        "extra": sorted(set(held) - set(expected)),
        "different": sorted((k, held[k], expected[k]) for k in set(expected) & set(held)
                            if held[k] != expected[k]),
    }


def converged(expected: State, workers: dict[int, State], store: State | None) -> bool:
    return all(w == expected for w in workers.values()) and store == expected


def describe(expected: State, workers: dict[int, State], store: State | None) -> str:
    """A failure message naming every worker and the store that differ, and how."""
    lines = []
    for pid, held in sorted(workers.items()):
        if held != expected:
            lines.append(f"worker {pid}: {json.dumps(differences(expected, held))}")
    if store != expected:
        lines.append(f"store: {json.dumps(differences(expected, store))}"
                     + (" (absent)" if store is None else ""))
    return "\n".join(lines) or "converged"


# -- waits on the whole state (the fault suite's, and every folder's that starts clusters) ------
#
# A fault test proves "nothing lost" on the whole state, never on the one flag it
# changed: after the fault clears, every worker serves exactly Edge's features
# (none missing, none extra, none older) and the store holds exactly them.
# ``wait_converged`` is that check, as one bounded wait that fails with
# ``describe()``; ``never_lose`` also fails the moment a worker drops a feature
# it held and Edge still has (a transient loss is served to requests too).

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
