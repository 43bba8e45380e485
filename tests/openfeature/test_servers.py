"""The real openfeature-sdk in every worker of a real gunicorn (and uWSGI), on a shared store."""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator
from tests.support.memcached import Memcached
from tests.support.servers import cluster_starter

from .conftest import API_KEY, feature

#: real gunicorn and uWSGI workers serving the OpenFeature app
pytestmark = pytest.mark.servers

APP = "tests.openfeature.of_app:application"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def start(edge: EdgeSimulator, memcached: Memcached, prefix: str,
          tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start clusters serving the OpenFeature app; each is stopped and killed by pid."""
    env = {
        "FEATUREHUB_EDGE_URL": edge.url,
        "FEATUREHUB_API_KEY": API_KEY,
        "FH_PREFORK_STORE": memcached.url,
        "FH_PREFORK_PREFIX": prefix,
        "FH_PREFORK_REFRESH_SECONDS": "0.5",
        "FH_PREFORK_EDGE_BACKOFF_MAX": "1",
        "OF_READY_TIMEOUT": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }
    with cluster_starter(env, tmp_path, app=APP) as run:
        yield run


def ask(kind: str, key: str, default: Any = "", tk: str | None = None,
        **attrs: str) -> str:
    query: dict[str, Any] = {"type": kind, "key": key, "default": default}
    if tk is not None:
        query["tk"] = tk
    query.update({f"attr.{name}": value for name, value in attrs.items()})
    return "/eval?" + urllib.parse.urlencode(query)


def until_every_worker(cluster: Cluster, path: str, ok: Callable[[Any], bool],
                       timeout: float = 20.0) -> dict[int, Any]:
    """Ask ``path`` until every worker has given an answer that satisfies ``ok`` (bounded)."""
    pids = set(cluster.worker_pids())
    good: dict[int, Any] = {}
    last: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while not pids <= set(good):
        if time.monotonic() >= deadline:
            raise AssertionError(f"workers {sorted(pids - set(good))} never satisfied {path} "
                                 f"within {timeout} s; last answers: {last}\n"
                                 f"{cluster.log_text()[-3000:]}")
        try:
            answer = cluster.get(path, timeout=2)
        except (OSError, ValueError):
            time.sleep(0.02)  # a worker busy or restarting; bounded by the deadline
            continue
        last[answer["pid"]] = answer
        if ok(answer):
            good[answer["pid"]] = answer
        time.sleep(0.005)
    return {pid: good[pid] for pid in pids}


def saw(event: str, flag: str | None = None) -> Callable[[Any], bool]:
    def check(answer: Any) -> bool:
        return any(e["event"] == event and (flag is None or flag in (e["flags_changed"] or []))
                   for e in answer["events"])
    return check


def test_four_gunicorn_workers(start: Callable[..., Cluster], edge: EdgeSimulator) -> None:
    edge.go_down()  # a fresh store prefix and no Edge: no worker knows any state
    cluster = start("gunicorn", 4)
    pids = cluster.worker_pids()
    assert len(pids) == 4

    # -- not ready before any state is known, ready once Edge answers ----------------------
    for answer in cluster.sample(ask("boolean", "BOOL_FLAG", "false")).values():
        assert answer["error_code"] == "PROVIDER_NOT_READY" and answer["value"] is False
        assert answer["reason"] == "ERROR" and answer["status"] in ("NOT_READY", "ERROR")
    edge.come_up()
    until_every_worker(cluster, "/events",
                       lambda a: a["status"] == "READY" and saw("PROVIDER_READY")(a))

    # -- every type, in every worker --------------------------------------------------------
    for kind, key, default, value, version in [
        ("boolean", "BOOL_FLAG", "false", True, 3),
        ("string", "STR_FLAG", "x", "blue", 2),
        ("integer", "INT_FLAG", "0", 42, 1),
        ("float", "FLOAT_FLAG", "0", 2.5, 1),
        ("object", "OBJ_FLAG", "{}", {"a": 1, "b": [1, 2]}, 1),
        ("object", "LIST_FLAG", "{}", [1, 2, 3], 1),
    ]:
        for answer in cluster.sample(ask(kind, key, default)).values():
            assert answer["value"] == value and answer["reason"] == "STATIC", answer
            assert answer["error_code"] is None and answer["variant"] is None
            assert answer["flag_metadata"]["key"] == key
            assert answer["flag_metadata"]["version"] == version
    for answer in cluster.sample(ask("string", "NULL_STR", "fallback")).values():
        assert answer["value"] == "fallback" and answer["reason"] == "DEFAULT"

    # -- every error code a deployed provider can give ------------------------------------
    for path, code in [
        (ask("boolean", "NO_SUCH_FLAG", "true"), "FLAG_NOT_FOUND"),
        (ask("boolean", "STR_FLAG", "true"), "TYPE_MISMATCH"),
        (ask("integer", "FLOAT_FLAG", "7"), "TYPE_MISMATCH"),
        (ask("object", "SCALAR_JSON", "{}"), "TYPE_MISMATCH"),
        (ask("string", "BY_IP", "d", "u1", ip="not-an-ip"), "GENERAL"),
    ]:
        for answer in cluster.sample(path).values():
            assert answer["error_code"] == code and answer["reason"] == "ERROR", (path, answer)
            assert answer["value"] in (True, 7, {}, "d")

    # -- targeting by attribute --------------------------------------------------------------
    for path, value, variant in [
        (ask("string", "TARGETED", "d", "user-7"), "mine", "one-user"),
        (ask("string", "TARGETED", "d", "u1", country="new_zealand"), "kiwi", "kiwis"),
        (ask("string", "TARGETED", "d", "u1", platform="ios", version="2.3.0"), "ios", "ios-2"),
        (ask("string", "TARGETED", "d", "u1", device="mobile"), "small", "mobile"),
        (ask("string", "TARGETED", "d", "u1", plan="gold", seats="11", beta="true"), "gold",
         "gold-plan"),
        (ask("string", "TARGETED", "d", "u1", country="australia"), "default", None),
        (ask("string", "BY_IP", "d", "u1", ip="10.9.8.7"), "office", "office"),
    ]:
        for answer in cluster.sample(path).values():
            assert answer["value"] == value and answer["variant"] == variant, (path, answer)
            assert answer["reason"] == ("TARGETING_MATCH" if variant else "STATIC")

    # -- a change sent to ONE worker's Edge stream reaches every worker as an event -------
    assert edge.wait_for_streams(4, 10)
    stream = edge.streams()[0]
    owner = edge.stream_pid(stream)
    assert owner is None or owner in pids
    sent = time.monotonic()
    edge.push_feature(feature("STR_FLAG", "green", 3, "STRING"), stream_id=stream.id)
    changed = until_every_worker(cluster, "/events",
                                 saw("PROVIDER_CONFIGURATION_CHANGED", "STR_FLAG"))
    took = time.monotonic() - sent
    assert set(changed) == set(pids) and took < 10
    for answer in cluster.sample(ask("string", "STR_FLAG", "x")).values():
        assert answer["value"] == "green" and answer["flag_metadata"]["version"] == 3
    for answer in changed.values():
        events = [e for e in answer["events"] if e["event"] == "PROVIDER_CONFIGURATION_CHANGED"]
        assert all(e["flags_changed"] == ["STR_FLAG"] for e in events), events
        assert not saw("PROVIDER_ERROR")(answer) or answer["status"] == "READY"


def test_provider_set_in_the_master_with_preload(start: Callable[..., Cluster],
                                                 edge: EdgeSimulator) -> None:
    """Created before the fork: each worker attaches to its own repository and hears events.

    The master's initialize() fails (no state there yet) and its handlers run, so the
    OpenFeature event pool has threads in the master that no worker inherits.
    """
    cluster = start("gunicorn", 2, ("--preload",))
    pids = cluster.worker_pids()
    until_every_worker(cluster, "/events",
                       lambda a: a["status"] == "READY" and saw("PROVIDER_READY")(a))
    edge.push_feature(feature("INT_FLAG", 43, 2, "NUMBER"))
    changed = until_every_worker(cluster, "/events",
                                 saw("PROVIDER_CONFIGURATION_CHANGED", "INT_FLAG"))
    assert set(changed) == set(pids) and cluster.master_pid not in changed
    for answer in cluster.sample(ask("integer", "INT_FLAG", "0")).values():
        assert answer["value"] == 43 and answer["reason"] == "STATIC"


def test_leader_mode(start: Callable[..., Cluster], edge: EdgeSimulator) -> None:
    """One Edge stream for all workers: followers hear a change through the store."""
    cluster = start("gunicorn", 3, env={"FH_PREFORK_EDGE_MODE": "leader",
                                        "FH_PREFORK_LEASE_SECONDS": "2"})
    pids = cluster.worker_pids()
    until_every_worker(cluster, "/events", lambda a: a["status"] == "READY")
    assert edge.wait_until(lambda: len(edge.streams()) == 1, 15)
    leader = edge.stream_pid(edge.streams()[0])
    edge.push_feature(feature("STR_FLAG", "leader", 3, "STRING"))
    changed = until_every_worker(cluster, "/events",
                                 saw("PROVIDER_CONFIGURATION_CHANGED", "STR_FLAG"))
    assert set(changed) == set(pids) and (leader is None or leader in pids)
    for answer in cluster.sample(ask("string", "STR_FLAG", "x")).values():
        assert answer["value"] == "leader" and answer["status"] == "READY"


def test_uwsgi_workers(start: Callable[..., Cluster], edge: EdgeSimulator) -> None:
    """uWSGI imports the app in the master and forks it, often before the provider's
    initialize() (on an OpenFeature thread) has finished there.

    ``py-call-uwsgi-fork-hooks`` is required here, not just recommended: the
    OpenFeature SDK runs threads in the master, and without the hooks uWSGI forks
    without resetting the GIL, so a worker can hang on its first Python call.
    """
    from fh_prefork.testing.cluster import _bin

    try:
        _bin("uwsgi")
    except RuntimeError:
        pytest.skip("uwsgi is not installed")
    cluster = start("uwsgi", 2, ("--py-call-uwsgi-fork-hooks", "--enable-threads"))
    pids = cluster.worker_pids()
    # a fresh store prefix: a worker knows flags once its Edge stream answered
    until_every_worker(cluster, "/events", lambda a: a["status"] == "READY")
    for answer in cluster.sample(ask("string", "TARGETED", "d", "u1",
                                     country="new_zealand")).values():
        assert answer["value"] == "kiwi" and answer["reason"] == "TARGETING_MATCH"
    edge.push_feature(feature("BOOL_FLAG", False, 4))
    changed = until_every_worker(cluster, "/events",
                                 saw("PROVIDER_CONFIGURATION_CHANGED", "BOOL_FLAG"))
    assert set(changed) == set(pids)
    for answer in cluster.sample(ask("boolean", "BOOL_FLAG", "true")).values():
        assert answer["value"] is False and answer["flag_metadata"]["version"] == 4
