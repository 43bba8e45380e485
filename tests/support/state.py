"""Whole-state questions: what every worker serves and the store holds, against Edge.

"Nothing lost" is checked on the whole state, never on the one flag a test
changed: every worker and the store must hold exactly Edge's features (none
missing, none extra, none older).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymemcache.client.base import Client

from fh_prefork import features as fs
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator

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
