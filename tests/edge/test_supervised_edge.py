"""SupervisedEdge against the simulator: real sockets, real SDK repository, bounded waits."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from featurehub_sdk.featurehub_config import FeatureHubConfig
from featurehub_sdk.featurehub_repository import FeatureHubRepository

from fh_prefork.apikey import redact
from fh_prefork.edge import EdgeState, SupervisedEdge, edge_provider
from fh_prefork.listener import ListeningRepository
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.edge.scripted import UNKNOWN_KEY_FAILURE, ScriptedEdge, http, sse
from tests.support import procs
from tests.support.edge import serve_edge
from tests.support.servers import cluster_starter, fh_log_lines

KEY = "portfolio/env-1/client*secret"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.3, "min_attempt_interval": 0.05}


class RecordingRepository(FeatureHubRepository):  # type: ignore[misc]
    """The SDK repository, recording notifications; can be told to fail the next notify."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.fail_next = 0

    def notify(self, status: str, data: Any) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("repository exploded")
        self.calls.append((status, data))
        super().notify(status, data)

    def value(self, key: str) -> Any:
        return self.feature(key).get_value


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """The suite's bounded wait (fails the test naming the timeout), with this file's default."""
    return bool(procs.wait_for(predicate, timeout, interval=0.01))


def _flag_is(repo: RecordingRepository, key: str, expected: Any) -> Callable[[], bool]:
    return lambda: bool(repo.value(key) is expected)


@pytest.fixture
def sim() -> Iterator[EdgeSimulator]:
    yield from serve_edge([make_feature("FLAG_A", True), make_feature("FLAG_B", False)],
                          keepalive_interval=30.0, api_keys=[KEY])


@pytest.fixture
def repo() -> RecordingRepository:
    return RecordingRepository()


@pytest.fixture
def make_edge(
        sim: EdgeSimulator, repo: RecordingRepository) -> Iterator[Callable[..., SupervisedEdge]]:
    built: list[SupervisedEdge] = []

    def factory(**kwargs: Any) -> SupervisedEdge:
        opts = {**FAST, **kwargs}
        key = opts.pop("key", KEY)
        url = opts.pop("url", sim.url)
        edge = SupervisedEdge(url, [key], opts.pop("repository", repo), **opts)
        built.append(edge)
        return edge

    yield factory
    for edge in built:
        edge.close()


def test_sse_initial_features_and_updates(sim: EdgeSimulator, repo: RecordingRepository,
                                          make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge()
    assert edge.client_evaluated() and edge.status()["state"] == "connecting"
    asyncio.run(edge.poll())
    asyncio.run(edge.poll())  # idempotent
    assert wait_for(lambda: repo.value("FLAG_A") is True and repo.is_ready())
    assert repo.value("FLAG_B") is False
    sim.push_feature(make_feature("FLAG_B", True, version=2))
    assert wait_for(lambda: repo.value("FLAG_B") is True)
    sim.delete_feature({"key": "FLAG_A"})
    assert wait_for(lambda: repo.value("FLAG_A") is None)
    sim.set_features([make_feature("FLAG_C", "x", type="STRING")])
    assert wait_for(lambda: repo.value("FLAG_C") == "x")
    status = edge.status()
    assert status["transport"] == "sse" and status["state"] == "connected"
    assert status["connects"] == 1 and status["failures"] == 0
    assert status["events"] >= 5 and status["last_error"] is None
    last_event_at = status["last_event_at"]
    assert last_event_at is not None and abs(last_event_at - time.time()) < 5
    assert status["next_attempt_in"] is None
    assert sim.total_stream_connections == 1 and sim.max_concurrent_streams == 1
    assert [name for name, _ in repo.calls] == ["features", "feature", "delete_feature", "features"]


def test_poll_transport_initial_updates_and_etag(sim: EdgeSimulator, repo: RecordingRepository,
                                                 make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge(transport="poll", poll_interval=0.05)
    edge.start()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    # unchanged state: further polls are answered 304 and notify nothing
    polls = sim.total_poll_requests
    assert wait_for(lambda: sim.total_poll_requests >= polls + 3)
    assert len(repo.calls) == 1
    sim.push_feature(make_feature("FLAG_A", False, version=2))
    assert wait_for(lambda: repo.value("FLAG_A") is False)
    assert len(repo.calls) == 2
    status = edge.status()
    assert status["transport"] == "poll" and status["state"] == "connected"
    assert status["failures"] == 0 and sim.total_stream_connections == 0


def test_poll_cache_control_max_age_sets_interval(
        sim: EdgeSimulator, make_edge: Callable[..., SupervisedEdge]) -> None:
    sim.poll_max_age = 1
    edge = make_edge(transport="poll", poll_interval=30.0)
    edge.start()
    assert wait_for(lambda: sim.total_poll_requests >= 1)
    started = time.monotonic()
    assert wait_for(lambda: sim.total_poll_requests >= 2, timeout=5)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_edge_down_at_start_then_up(sim: EdgeSimulator, repo: RecordingRepository,
                                    make_edge: Callable[..., SupervisedEdge],
                                    transport: str) -> None:
    sim.go_down()
    edge = make_edge(transport=transport, poll_interval=0.1)
    edge.start()
    assert wait_for(lambda: edge.status()["failures"] >= 3)
    status = edge.status()
    assert status["state"] == "backoff" and "refused" in str(status["last_error"]).lower()
    assert edge._thread is not None and edge._thread.is_alive()
    sim.come_up()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    assert wait_for(lambda: edge.status()["state"] == "connected")


def test_flapping_edge_recovers_with_correct_flags(
        sim: EdgeSimulator, repo: RecordingRepository,
        make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge()
    edge.start()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    for version in range(2, 7):
        sim.go_down()
        # changes made while Edge is unreachable arrive with the full state on reconnect
        sim.push_feature(make_feature("FLAG_A", version % 2 == 0, version=version))
        assert wait_for(lambda: edge.status()["state"] == "backoff")
        sim.come_up()
        assert wait_for(_flag_is(repo, "FLAG_A", version % 2 == 0)), version
        assert wait_for(lambda: sim.open_streams == 1)
    sim.push_feature(make_feature("FLAG_B", True, version=2))
    assert wait_for(lambda: repo.value("FLAG_B") is True)
    assert repo.value("FLAG_A") is True
    assert edge.status()["state"] == "connected"
    assert sim.max_concurrent_streams == 1


def _attempt_rate(sim: EdgeSimulator, edge: SupervisedEdge, window: float) -> tuple[int, float]:
    sim.close_after_each_event = True
    edge.start()
    assert sim.wait_until(lambda: sim.total_stream_connections >= 1, 5)
    first = sim.total_stream_connections
    started = time.monotonic()
    sim.wait_until(lambda: False, window)  # bounded wait, counting what the client does
    elapsed = time.monotonic() - started
    return sim.total_stream_connections - first, elapsed


def test_stream_closed_after_every_event_default_floor(
        sim: EdgeSimulator, make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge(backoff_initial=1.0, backoff_max=30.0, min_attempt_interval=1.0)
    attempts, elapsed = _attempt_rate(sim, edge, 2.0)
    assert attempts <= elapsed * 1.5 + 2, (attempts, elapsed)
    assert attempts >= 1  # it does keep reconnecting
    assert edge.status()["failures"] == 0


def test_stream_closed_after_every_event_floor_is_configurable(
        sim: EdgeSimulator, make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge(min_attempt_interval=0.2)
    attempts, elapsed = _attempt_rate(sim, edge, 1.5)
    assert attempts <= elapsed / 0.2 * 1.5 + 2, (attempts, elapsed)
    assert attempts >= 3


def test_500_backs_off_then_recovers(sim: EdgeSimulator, repo: RecordingRepository,
                                     make_edge: Callable[..., SupervisedEdge],
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fh_prefork.edge")
    sim.set_failure(500)
    edge = make_edge(backoff_initial=0.05, backoff_max=0.2)
    edge.start()
    assert wait_for(lambda: edge.status()["failures"] >= 4)
    status = edge.status()
    assert status["state"] == "backoff" and "500" in str(status["last_error"])
    assert status["next_attempt_in"] is None or 0 <= status["next_attempt_in"] <= 0.2
    sim.set_failure(None)
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    warnings = [r for r in caplog.records
                if r.name == "fh_prefork.edge" and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one line per state change, not one per retry
    infos = [r.getMessage() for r in caplog.records
             if r.name == "fh_prefork.edge" and r.levelno == logging.INFO]
    assert any("reachable again" in m for m in infos)


def test_backoff_grows_and_is_capped(make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge(backoff_initial=0.1, backoff_max=0.4, min_attempt_interval=0.0)
    delays = [edge._backoff(k) for k in range(1, 8) for _ in range(20)]
    assert all(0.05 <= d <= 0.4 for d in delays)
    assert all(0.1 <= edge._backoff(1) <= 0.2 for _ in range(20))
    assert all(0.2 <= edge._backoff(10) <= 0.4 for _ in range(20))


def test_404_key_not_found_logs_one_error_and_recovers(
        sim: EdgeSimulator, repo: RecordingRepository,
        make_edge: Callable[..., SupervisedEdge], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fh_prefork.edge")
    sim.set_failure(404)
    edge = make_edge(backoff_max=0.1)
    edge.start()
    assert wait_for(lambda: edge.status()["failures"] >= 4)
    assert edge.status()["state"] == "key_not_found"
    errors = [r.getMessage() for r in caplog.records
              if r.name == "fh_prefork.edge" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "404" in errors[0] and "does not exist or was deleted" in errors[0]
    assert redact(KEY) in errors[0] and KEY not in errors[0], "the key's secret is never logged"
    sim.set_failure(None)  # the key was recreated
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    assert edge.status()["state"] == "connected"


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_unknown_key_is_key_not_found(sim: EdgeSimulator, make_edge: Callable[..., SupervisedEdge],
                                      transport: str) -> None:
    edge = make_edge(key="portfolio/env-1/other*key", transport=transport, backoff_max=0.1)
    edge.start()
    assert wait_for(lambda: edge.status()["state"] == "key_not_found")


def test_malformed_json_is_logged_and_thread_survives(
        sim: EdgeSimulator, repo: RecordingRepository,
        make_edge: Callable[..., SupervisedEdge], caplog: pytest.LogCaptureFixture) -> None:
    edge = make_edge()
    edge.start()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    assert wait_for(lambda: sim.open_streams == 1)
    with caplog.at_level(logging.WARNING, logger="fh_prefork.edge"):
        sim.send_raw_event("feature", "{not json")
        sim.send_raw_event("features", '{"an": "object"}')
        sim.send_raw_event("config", "[]")
        sim.push_feature(make_feature("FLAG_A", False, version=2))
        assert wait_for(lambda: repo.value("FLAG_A") is False)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("malformed JSON" in m for m in messages)
    assert len(messages) == 3
    status = edge.status()
    assert status["state"] == "connected" and status["connects"] == 1
    assert sim.total_stream_connections == 1


def test_exception_in_repository_reconnects_with_backoff(
        sim: EdgeSimulator, repo: RecordingRepository,
        make_edge: Callable[..., SupervisedEdge]) -> None:
    repo.fail_next = 2
    edge = make_edge()
    edge.start()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    status = edge.status()
    assert status["failures"] == 2 and "repository exploded" in str(status["last_error"])
    assert wait_for(lambda: edge.status()["state"] == "connected")
    assert sim.total_stream_connections == 3


def test_close_interrupts_idle_stream_promptly(
        sim: EdgeSimulator, repo: RecordingRepository,
        make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge(read_timeout=90.0)
    edge.start()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    assert sim.wait_for_streams(1, 5)
    thread = edge._thread
    assert thread is not None
    started = time.monotonic()
    edge.close()
    took = time.monotonic() - started
    assert took < 10.0, took     # the blocked read would last read_timeout (90 s)
    assert not thread.is_alive()
    assert edge.status()["state"] == "closed"
    assert sim.wait_until(lambda: sim.open_streams == 0, 5)
    edge.close()  # idempotent
    edge.start()  # no resurrection after close
    assert edge._thread is thread and edge.status()["state"] == "closed"


def test_close_during_backoff_is_prompt(sim: EdgeSimulator,
                                        make_edge: Callable[..., SupervisedEdge]) -> None:
    sim.go_down()
    edge = make_edge(backoff_initial=30.0, backoff_max=30.0)
    edge.start()
    assert wait_for(lambda: edge.status()["state"] == "backoff")
    next_in = edge.status()["next_attempt_in"]
    assert next_in is not None and next_in > 5
    started = time.monotonic()
    edge.close()
    assert time.monotonic() - started < 1.0


def test_close_from_another_thread_while_connecting_to_silent_server(
        make_edge: Callable[..., SupervisedEdge]) -> None:
    """A server that accepts but never answers: close() still wins over the read timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        port = listener.getsockname()[1]
        edge = make_edge(url=f"http://127.0.0.1:{port}/", read_timeout=60.0)
        edge.start()
        assert wait_for(lambda: len(accepted) >= 1)
        started = time.monotonic()
        edge.close()
        assert time.monotonic() - started < 1.0
        assert edge._thread is not None and not edge._thread.is_alive()
    finally:
        stop.set()
        acceptor.join(2)
        listener.close()
        for conn in accepted:
            conn.close()


def test_config_event_stale_pauses_then_resumes(
        sim: EdgeSimulator, repo: RecordingRepository,
        make_edge: Callable[..., SupervisedEdge]) -> None:
    """``edge.stale`` is seconds (the JavaScript SDK's reading): a pause, never a stop."""
    edge = make_edge()
    edge.start()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    assert sim.wait_for_streams(1, 5)
    sim.send_config({"something.else": 1})  # the SDK dies with KeyError on this one
    sim.push_feature(make_feature("FLAG_A", False, version=2))
    assert wait_for(lambda: repo.value("FLAG_A") is False)
    assert edge.status()["state"] == "connected"
    sim.send_config({"edge.stale": 1})
    assert wait_for(lambda: edge.status()["state"] == "stale")
    assert repo.value("FLAG_A") is False  # the last known flags stay served
    next_in = edge.status()["next_attempt_in"]
    assert next_in is not None and next_in <= 1.0
    sim.push_feature(make_feature("FLAG_A", True, version=3))   # made during the pause
    assert wait_for(lambda: repo.value("FLAG_A") is True, timeout=10)
    assert edge.status()["state"] == "connected"
    assert sim.total_stream_connections == 2


def test_edge_provider_with_featurehub_config(sim: EdgeSimulator) -> None:
    config = FeatureHubConfig(sim.url.rstrip("/"), [KEY],
                              edge_provider=edge_provider(**FAST, name="custom-edge"))
    try:
        asyncio.run(config.init())
        edge = config.get_or_create_edge_service()
        assert isinstance(edge, SupervisedEdge)
        assert edge._thread is not None and edge._thread.name == "custom-edge"
        repository = config.repository()
        assert wait_for(lambda: repository.feature("FLAG_A").get_value is True)
        ctx = config.new_context()
        asyncio.run(ctx.build())
        assert ctx.feature("FLAG_A").get_flag is True
    finally:
        config.close()


def test_constructor_validation(sim: EdgeSimulator, repo: RecordingRepository) -> None:
    with pytest.raises(ValueError):
        SupervisedEdge(sim.url, [KEY], repo, transport="websocket")
    with pytest.raises(ValueError):
        SupervisedEdge(sim.url, [], repo)
    edge = SupervisedEdge(sim.url, ["server-eval-key"], repo)
    assert not edge.client_evaluated()
    asyncio.run(edge.context_change("userkey=bob"))
    edge.close()  # never started: fine
    assert edge.status()["state"] == "closed"


# -- every Edge answer as the real Edge means it (scripted servers, exact bytes) ---------------
#
# Bytes follow featurehub-io/featurehub: backend/edge-full/.../TimedBucketClientConnection.java
# (ack discover, failure, features with the etag as its id), EventStreamResource.kt,
# backend/edge-rest/.../EdgeResource.kt (501), backend/edge-common/.../FeatureGet.kt (poll,
# 304, 404) and CacheControlResponseWrapper.kt (max-age on 200 and 304).

ENV = "env-1"
FEATURES = [make_feature("FLAG_A", True)]
DISCOVER = ("ack", '{"status":"discover"}')
GOOD_STREAM = sse(DISCOVER, ("features", json.dumps(FEATURES)), event_id="etag-1")


def poll_body(features: list[dict[str, Any]] = FEATURES) -> bytes:
    return json.dumps([{"id": ENV, "features": features}]).encode()


def errors_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "fh_prefork.edge" and r.levelno >= logging.ERROR]


def edge_for(server: ScriptedEdge, repository: Any, **kwargs: Any) -> SupervisedEdge:
    opts: dict[str, Any] = {**FAST, **kwargs}
    return SupervisedEdge(server.url, [KEY], repository, **opts)


def test_edge_states_are_one_literal() -> None:
    assert set(get_args(EdgeState)) == {"connecting", "connected", "backoff", "key_not_found",
                                        "stale", "closed"}


def test_sse_unrecognized_api_key_is_key_not_found_with_exponential_backoff(
        repo: RecordingRepository, caplog: pytest.LogCaptureFixture) -> None:
    """Edge: HTTP 200, ack, failure "Unrecognized API key...", close. Before: taken as data,
    a reconnect every floor (1 s) forever and status() "connected"."""
    caplog.set_level(logging.DEBUG, logger="fh_prefork.edge")
    answer = sse(DISCOVER, ("failure", UNKNOWN_KEY_FAILURE))
    with ScriptedEdge(lambda path, headers: answer) as server:
        # the default floor scaled down 10x: 0.1 s; backoff 0.1 s doubling up to 3 s
        edge = edge_for(server, repo, backoff_initial=0.1, backoff_max=3.0,
                        min_attempt_interval=0.1)
        try:
            edge.start()
            assert wait_for(lambda: edge.status()["state"] == "key_not_found")
            procs.hold_for(4.0)
            requests = server.count("stream")
            status = edge.status()
            assert status["state"] == "key_not_found"
            assert "Unrecognized API key" in str(status["last_error"])
            next_in = status["next_attempt_in"]
            assert next_in is None or next_in <= 3.0
        finally:
            edge.close()
    # a reconnect per floor would be 40; doubling from 0.1 s reaches 3 s within 5 attempts
    assert 2 <= requests <= 9, requests
    gaps = [b - a for a, b in itertools.pairwise(server.times("stream"))]
    assert max(gaps) >= 0.8, gaps   # the delay grew past 8x the first one
    errors = errors_of(caplog)
    assert len(errors) == 1, errors
    assert f"environment {ENV}" in errors[0] and "Unrecognized API key" in errors[0]
    assert redact(KEY) in errors[0] and KEY not in errors[0] and "secret" not in errors[0]
    assert not repo.calls


def test_sse_transient_failure_backs_off_then_recovers(
        repo: RecordingRepository, caplog: pytest.LogCaptureFixture) -> None:
    """Any other failure (Edge's named-cache error) is transient: backoff, then data."""
    caplog.set_level(logging.DEBUG, logger="fh_prefork.edge")
    failing = sse(DISCOVER, ("failure", '{"status":"unable to communicate with named cache."}'))
    answers = {"now": failing}
    with ScriptedEdge(lambda path, headers: answers["now"]) as server:
        edge = edge_for(server, repo, backoff_initial=0.1, backoff_max=3.0,
                        min_attempt_interval=0.1)
        try:
            edge.start()
            assert wait_for(lambda: edge.status()["state"] == "backoff")
            procs.hold_for(3.0)
            requests = server.count("stream")
            assert 2 <= requests <= 8, requests     # a reconnect per floor would be 30
            assert edge.status()["state"] == "backoff"
            assert "named cache" in str(edge.status()["last_error"])
            answers["now"] = GOOD_STREAM + b""
            assert wait_for(lambda: repo.value("FLAG_A") is True, timeout=10)
        finally:
            edge.close()
    assert not errors_of(caplog)


def test_sse_ack_alone_is_no_data_and_backs_off(repo: RecordingRepository) -> None:
    """A stream that sends only Edge's discover ack and closes brought nothing: backoff."""
    answer = sse(DISCOVER)
    with ScriptedEdge(lambda path, headers: answer) as server:
        edge = edge_for(server, repo, backoff_initial=0.1, backoff_max=3.0,
                        min_attempt_interval=0.1)
        try:
            edge.start()
            assert wait_for(lambda: edge.status()["failures"] >= 1)
            procs.hold_for(3.0)
            requests = server.count("stream")
            assert edge.status()["state"] == "backoff"
        finally:
            edge.close()
    assert 2 <= requests <= 8, requests


def test_sse_heartbeat_ignored_and_bye_reconnects_without_state_churn(
        repo: RecordingRepository, caplog: pytest.LogCaptureFixture) -> None:
    """Features, a heartbeat ack, then Edge's ``bye``: reconnect at the floor, no backoff, no
    state change logged, the heartbeat not taken as an event of interest."""
    caplog.set_level(logging.DEBUG, logger="fh_prefork.edge")
    answer = sse(DISCOVER, ("features", json.dumps(FEATURES)), ("ack", '"\u2764\ufe0f"'),
                 ("bye", '{"status":"closed"}'), event_id="etag-1")
    with ScriptedEdge(lambda path, headers: answer) as server:
        edge = edge_for(server, repo, min_attempt_interval=0.2)
        try:
            edge.start()
            assert wait_for(lambda: server.count("stream") >= 4, timeout=10)
            status = edge.status()
        finally:
            edge.close()
    assert status["failures"] == 0 and status["connects"] >= 3
    assert repo.value("FLAG_A") is True
    infos = [r.getMessage() for r in caplog.records
             if r.name == "fh_prefork.edge" and r.levelno >= logging.INFO]
    assert len(infos) == 1 and "connected" in infos[0], infos
    # the etag Edge put on `features` is echoed (unquoted, so Edge sends a full list again)
    assert server.requests[-1][2].get("last-event-id") == "etag-1"


def test_sse_501_switches_to_polling_and_says_so(
        repo: RecordingRepository, caplog: pytest.LogCaptureFixture) -> None:
    """A poll-only Edge (edge-rest) answers 501 on the stream path. Before: backoff forever."""
    caplog.set_level(logging.DEBUG, logger="fh_prefork.edge")

    def script(path: str, headers: dict[str, str]) -> bytes:
        if path.startswith("/features/"):
            return http(501, b'{"message":"SSE not supported in GET-Edge"}',
                        {"Content-Type": "application/json"})
        return http(200, poll_body(), {"ETag": '"e1"', "Content-Type": "application/json"})

    with ScriptedEdge(script) as server:
        edge = edge_for(server, repo, poll_interval=0.4)
        try:
            edge.start()
            assert wait_for(lambda: repo.value("FLAG_A") is True)
            assert wait_for(lambda: server.count("poll") >= 3, timeout=10)
            status = edge.status()
            times = server.times("poll")
        finally:
            edge.close()
    assert server.count("stream") == 1
    assert status["transport"] == "poll" and status["polling_fallback"] is True
    assert status["state"] == "connected" and status["poll_interval"] == 0.4
    assert all(b - a >= 0.3 for a, b in itertools.pairwise(times)), times   # the poll interval
    said = [r.getMessage() for r in caplog.records
            if r.name == "fh_prefork.edge" and r.levelno == logging.WARNING]
    assert len(said) == 1 and "501" in said[0] and "polls" in said[0], said


def test_poll_236_is_stale_then_resumes(repo: RecordingRepository) -> None:
    """236 (the API's "environment stagnant"): data applied, a pause of ``stale_retry``, then
    polling again. Before: the worker stopped for good."""
    answers = {"status": 236}

    def script(path: str, headers: dict[str, str]) -> bytes:
        return http(answers["status"], poll_body(), {"ETag": '"e1"'})

    with ScriptedEdge(script) as server:
        edge = edge_for(server, repo, transport="poll", poll_interval=0.2, stale_retry=1.5)
        try:
            edge.start()
            assert wait_for(lambda: edge.status()["state"] == "stale")
            assert repo.value("FLAG_A") is True
            assert not edge.live()
            next_in = edge.status()["next_attempt_in"]
            assert next_in is not None and 0.5 < next_in <= 1.5
            answers["status"] = 200
            assert wait_for(lambda: edge.status()["state"] == "connected", timeout=10)
            assert server.count("poll") == 2
        finally:
            edge.close()


class CountingListeningRepository(ListeningRepository):
    def __init__(self) -> None:
        super().__init__()
        self.unchanged = 0

    def edge_list_unchanged(self) -> None:
        self.unchanged += 1
        super().edge_list_unchanged()


def test_poll_304_honours_max_age_and_counts_as_the_list_seen_again() -> None:
    """A 304 carries Edge's max-age too; it is Edge's last list seen again. Before: a 304's
    max-age was ignored and the repository never heard of it."""
    repository = CountingListeningRepository()

    def script(path: str, headers: dict[str, str]) -> bytes:
        if headers.get("if-none-match") == '"e1"':
            return http(304, headers={"ETag": '"e1"', "Cache-Control": "max-age=5"})
        return http(200, poll_body(), {"ETag": '"e1"'})

    with ScriptedEdge(script) as server:
        edge = edge_for(server, repository, transport="poll", poll_interval=0.2)
        try:
            edge.start()
            assert wait_for(lambda: repository.unchanged >= 1)
            first_304 = time.monotonic()
            procs.hold_for(2.0)
            polls = server.count("poll")
            status = edge.status()
            assert edge.live()
        finally:
            edge.close()
    assert polls == 2, (polls, time.monotonic() - first_304)  # 0.2 s polls would be ~10
    assert repository.unchanged == 1
    assert status["poll_interval"] == 5.0 and status["state"] == "connected"


def test_poll_live_means_a_recent_answer() -> None:
    """Poll mode: live while the last poll answered 200/304 within twice the interval."""
    answers = {"status": 200}

    def script(path: str, headers: dict[str, str]) -> bytes:
        if answers["status"] == 200:
            return http(200, poll_body(), {"ETag": '"e1"'})
        return http(answers["status"], b"{}")

    repository = ListeningRepository()
    with ScriptedEdge(script) as server:
        edge = edge_for(server, repository, transport="poll", poll_interval=0.3)
        try:
            assert not edge.live()
            edge.start()
            assert wait_for(edge.live)
            assert wait_for(lambda: server.count("poll") >= 3)
            assert edge.live()
            answers["status"] = 503
            assert wait_for(lambda: not edge.live(), timeout=5)
            assert edge.status()["state"] == "backoff"
        finally:
            edge.close()


def test_sse_live_while_connected(sim: EdgeSimulator, repo: RecordingRepository,
                                  make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge()
    assert not edge.live()
    edge.start()
    assert wait_for(edge.live)
    sim.go_down()
    assert wait_for(lambda: not edge.live())


# -- real gunicorn workers ------------------------------------------------------------------


@pytest.mark.servers
def test_gunicorn_workers_with_an_unknown_key_back_off_and_say_so(tmp_path: Path) -> None:
    """Two real gunicorn workers, each with its own Edge connection, against an Edge that does
    not know the key (its real SSE answer). Before: one request per worker per second."""
    answer = sse(DISCOVER, ("failure", UNKNOWN_KEY_FAILURE))
    env: dict[str, str | None] = {
        "FEATUREHUB_API_KEY": "portfolio/env-gone/client*secret",
        "FH_PREFORK_STORE": "none",
        "FH_PREFORK_EDGE_BACKOFF_MAX": "30",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    with ScriptedEdge(lambda path, headers: answer) as server:
        env["FEATUREHUB_EDGE_URL"] = server.url
        with cluster_starter(env, tmp_path) as start:
            cluster: Cluster = start("gunicorn", 2)
            procs.wait_for(lambda: server.count("stream") >= 2, 20, what="both workers asking")
            first = min(server.times("stream"))
            procs.hold_for(max(0.0, first + 12.0 - time.monotonic()))
            requests = sum(1 for at in server.times("stream") if at <= first + 12.0)
            states = {pid: s.get("edge", {}).get("state")
                      for pid, s in cluster.statuses().items()}
            lines = fh_log_lines(cluster)
    print(f"unknown key, 2 gunicorn workers, 12 s: {requests} stream requests")
    # doubling from 1 s: about 5 attempts a worker in 12 s; a reconnect a second would be 24
    assert 2 <= requests <= 13, requests
    errors = [line for line in lines if "ERROR" in line and "Unrecognized API key" in line]
    assert 1 <= len(errors) <= 2, lines      # one per worker, not one per attempt
    assert all("environment env-gone" in line and "client*secret" not in line
               for line in errors), errors
    assert set(states.values()) == {"key_not_found"}, states


def test_an_edge_thread_that_cannot_start_says_so_and_starts_on_the_next_try(
        repo: RecordingRepository, make_edge: Callable[..., SupervisedEdge],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread is launched (fh_prefork.threads), so a start that fails no longer reaches
    the caller of start(): the status names it, and start() may be called again."""
    real_start = threading.Thread.start

    def refuse_the_edge_thread(thread: threading.Thread) -> None:
        if thread.name.startswith("fh-prefork-"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    edge = make_edge()
    monkeypatch.setattr(threading.Thread, "start", refuse_the_edge_thread)
    edge.start()
    assert wait_for(lambda: edge.status()["last_error"] == "the Edge thread could not start")
    monkeypatch.setattr(threading.Thread, "start", real_start)
    edge.start()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
