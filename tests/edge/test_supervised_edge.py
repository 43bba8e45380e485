"""SupervisedEdge against the simulator: real sockets, real SDK repository, bounded waits."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from featurehub_sdk.featurehub_config import FeatureHubConfig
from featurehub_sdk.featurehub_repository import FeatureHubRepository

from fh_prefork.apikey import redact
from fh_prefork.edge import SupervisedEdge, edge_provider
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support import procs
from tests.support.edge import serve_edge

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
    assert abs(status["last_event_at"] - time.time()) < 5
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
    assert edge.status()["next_attempt_in"] > 5
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


def test_config_event_stale_stops_reconnecting(
        sim: EdgeSimulator, repo: RecordingRepository,
        make_edge: Callable[..., SupervisedEdge]) -> None:
    edge = make_edge()
    edge.start()
    assert wait_for(lambda: repo.value("FLAG_A") is True)
    assert sim.wait_for_streams(1, 5)
    sim.send_config({"something.else": 1})  # the SDK dies with KeyError on this one
    sim.push_feature(make_feature("FLAG_A", False, version=2))
    assert wait_for(lambda: repo.value("FLAG_A") is False)
    assert edge.status()["state"] == "connected"
    sim.send_config({"edge.stale": True})
    assert wait_for(lambda: edge.status()["state"] == "stale")
    thread = edge._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    assert sim.total_stream_connections == 1
    assert repo.value("FLAG_A") is False  # the last known flags stay served


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
