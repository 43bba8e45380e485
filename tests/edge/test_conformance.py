"""Edge protocol conformance: one test per row of ``shared/seed/edge-protocol.md``.

Each test checks two things: the simulator's wire behaviour is what the real FeatureHub Edge's
source does (the file is cited in the test's docstring, paths in the server repository
``featurehub-io/featurehub``), and what fh-prefork does with it, with real gunicorn workers and
a real memcached where the behaviour reaches them. The fh-prefork half is written for the
behaviour issue 19 asks for ("What must hold"), not for what main does today.

``ROWS`` is the table's data; ``python -m tests.edge.test_conformance [--out FILE] [--run]``
writes it as markdown (protocol point | what Edge does | what fh-prefork does), ``--run``
adding whether each row's test passes here (``scripts/conformance_table.py`` writes
``docs/edge-protocol-table.md``).

Where the source and the seed page differ (the source wins), the row says so.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, deleted_shape
from tests.edge.test_edge_simulator import SseReader
from tests.faults.whole_state import StoreReader, many_features, memcached_reader, wait_converged
from tests.servers.conftest import (  # noqa: F401  # server_env, start_cluster: fixtures
    API_KEY,
    REFRESH,
    server_env,
    start_cluster,
)
from tests.support.procs import hold_for, wait_for
from tests.support.servers import fh_log_lines
from tests.support.state import edge_state, worker_states

StartCluster = Callable[..., Cluster]
ENV_ID = API_KEY.split("/")[1]
TIMEOUT = urllib3.Timeout(connect=2.0, read=5.0)
#: propagation bound with real workers on a loaded machine: a refresh or two and a reconnect
SETTLE = 2 * REFRESH * 1.2 + 10.0
#: settings every cluster here runs with: a short absence grace, a short backoff cap
FAST = {"FH_PREFORK_EDGE_ABSENCE_SECONDS": "2", "FH_PREFORK_EDGE_BACKOFF_MAX": "2"}


@dataclass(frozen=True)
class Row:
    """One protocol point: what Edge does (from ``source``), what fh-prefork does (what
    ``test`` checks)."""

    point: str
    edge: str
    fh_prefork: str
    source: str
    test: str


ROWS: list[Row] = [
    Row("SSE path",
        "`GET /features/{apiKey}` (`{envId}/{secret}` or `{namedCache}/{envId}/{secret}`); "
        "context in `x-featurehub` or `?xfeaturehub=`",
        "each worker opens `features/{apiKey}` with its key",
        "backend/edge-full/src/main/kotlin/io/featurehub/edge/rest/EventStreamResource.kt",
        "test_sse_path"),
    Row("stream start",
        '`ack {"status":"discover"}`, then `features` (the full list) whose SSE `id:` is the '
        "cache etag, unquoted; a `Last-Event-ID` counts only when quoted (a quoted current one "
        "gets neither ack nor list), so every reconnect of an SDK that echoes the id gets a "
        "full list",
        "echoes the id; every (re)connect's list is applied; all workers hold Edge's state",
        "backend/edge-full/src/main/java/io/featurehub/edge/client/"
        "TimedBucketClientConnection.java, backend/edge-common/src/main/kotlin/io/featurehub/"
        "edge/features/EtagHolder.kt",
        "test_stream_start"),
    Row("a deleted feature",
        "`delete_feature` with `{id, key, l: false, version: 0, type}`: no value, no "
        "strategies (a delete publishes no value; a feature without one is sent at version 0; "
        "Jackson leaves nulls out)",
        "removed from every worker and the store, whatever the version (0 included)",
        "backend/mr-eventing/src/main/kotlin/io/featurehub/db/publish/DbCacheSource.kt, "
        "backend/edge-common/src/main/java/io/featurehub/edge/FeatureTransformerUtils.java",
        "test_deleted_feature"),
    Row("a retired feature",
        "`delete_feature` with the whole feature at its real version (the retire is an update: "
        "a newer version); full lists leave it out (`excludeRetired`); unretiring sends "
        "`feature` at a newer version",
        "leaves every worker and the store; back at the newer version when unretired",
        "backend/edge-full/src/main/java/io/featurehub/edge/client/"
        "TimedBucketClientConnection.java (notifyFeature), backend/edge-common/src/main/kotlin/"
        "io/featurehub/edge/features/FeatureRequesterSource.kt",
        "test_retired_feature"),
    Row("full list",
        "the environment's whole state on every (re)connect",
        "a feature deleted while no process was connected (no `delete_feature` heard) is "
        "removed once lists lack it, within the absence grace",
        "backend/edge-full/src/main/java/io/featurehub/edge/client/"
        "TimedBucketClientConnection.java (initResponse)",
        "test_full_list"),
    Row("stream end",
        'after `edge.sse.drop-after-seconds` (30 by default) `bye {"status":"closed"}`, '
        "then close",
        "reconnects at once, with no state churn and about one request per drop period",
        "backend/edge-full/src/main/java/io/featurehub/edge/bucket/"
        "EventOutputBucketService.java",
        "test_stream_end"),
    Row("heartbeat",
        '`edge.sse.heartbeat-period` 0 (off) by default; when on, `ack` with data `"❤️"`',
        "ignored: no reconnect, no warning",
        "backend/edge-full/src/main/java/io/featurehub/edge/client/"
        "TimedBucketClientConnection.java (heartbeat), backend/edge-full/src/main/java/io/"
        "featurehub/edge/bucket/EventOutputBucketService.java",
        "test_heartbeat"),
    Row("unknown or deleted API key",
        "SSE: HTTP 200, `ack`, then `failure "
        '{"status":"Unrecognized API key. Please stop requesting."}`, then close; '
        "poll: 404",
        "state `key_not_found` on both transports, an ERROR naming the environment (never the "
        "secret), requests backed off",
        "backend/edge-full/src/main/java/io/featurehub/edge/client/"
        "TimedBucketClientConnection.java (initResponse, failed), backend/edge-common/src/main/"
        "kotlin/io/featurehub/edge/rest/FeatureGet.kt",
        "test_unknown_key"),
    Row("cache not ready",
        "poll: 503; SSE: `ack`, no list, `bye` after a random 0-10 s (`edge.dacha.delay-slots`)",
        "keeps serving what it holds; retries; converges once Edge is ready",
        "backend/edge-full/src/main/java/io/featurehub/edge/bucket/"
        "EventOutputBucketService.java (dachaIsUnavailable), backend/edge-common/src/main/"
        "kotlin/io/featurehub/edge/rest/FeatureGet.kt",
        "test_cache_not_ready"),
    Row("poll",
        "`GET /features?apiKey=..&contextSha=..` -> `[{id: envId, features: [...]}]` with a "
        "quoted ETag; 304 (echoing `If-None-Match`) when it matches, one key only; 404 when "
        "every key is unknown; 400 without a key",
        "polls with the quoted ETag, takes 304 as the same list, converges on updates",
        "backend/edge-common/src/main/kotlin/io/featurehub/edge/rest/FeatureGet.kt",
        "test_poll"),
    Row("`cache-control: max-age`",
        "sent on 200, 304 (and 404) when configured (operator, then environment setting)",
        "polls at that interval, from a 304 as from a 200",
        "backend/edge-common/src/main/kotlin/io/featurehub/edge/utils/"
        "CacheControlResponseWrapper.kt",
        "test_cache_control_max_age"),
    Row("status 236",
        "in the API spec (environment stagnant); the open-source Edge never sends it",
        "applies the list, then pauses polling (state `stale`) and resumes after 300 s",
        "backend/edge-api/sse-api.yaml, backend/edge-common/src/main/kotlin/io/featurehub/edge/"
        "rest/FeatureGet.kt",
        "test_status_236"),
    Row("`config` event, `edge.stale`",
        "in the event enum; the open-source Edge never sends it",
        "stops for the given seconds, then reconnects (as the JavaScript SDK)",
        "backend/edge-api/sse-api.yaml",
        "test_config_edge_stale"),
    Row("poll-only Edge (`edge-rest`)",
        "the SSE path answers 501 (for `{namedCache}/{envId}/{key}`; source note: a "
        "two-part key's path matches only the PUT routes there, so a real edge-rest would "
        "answer 405 to it)",
        "switches that worker to polling, says so, serves Edge's features",
        "backend/edge-rest/src/main/kotlin/io/featurehub/edge/resources/EdgeResource.kt",
        "test_poll_only_edge"),
    Row("many clients",
        "no per-client cap (`edge.cache.streamed-maximum-environments` 5000 environments)",
        "one stream per worker process, no more",
        "backend/edge-full/src/main/kotlin/io/featurehub/edge/StreamingFeatureSource.kt",
        "test_many_clients"),
]


# -- fixtures and helpers --------------------------------------------------------------------
@pytest.fixture
def edge() -> Iterator[EdgeSimulator]:
    """The simulator with the real Edge's defaults (drop time 30 s, no keepalive comments)
    serving eight features; ``server_env`` points the clusters at it."""
    with EdgeSimulator() as sim:
        sim.set_features(many_features(8))
        yield sim


@pytest.fixture
def store(memcached: Any, prefix: str) -> StoreReader:
    return memcached_reader(memcached.address, prefix)


def start(start_cluster: StartCluster, workers: int = 2, **env: str) -> Cluster:  # noqa: F811
    return start_cluster("gunicorn", workers, env={**FAST, **env})


def sse(edge: EdgeSimulator, key: str = API_KEY, **headers: str) -> SseReader:
    return SseReader(f"{edge.url}features/{key}", headers)


def events(reader: SseReader, n: int) -> list[tuple[str, str, str]]:
    return [reader.next_event() for _ in range(n)]


def get(url: str, **headers: str) -> Any:
    return urllib3.request("GET", url, headers=headers, retries=False, timeout=TIMEOUT)


def poll_url(edge: EdgeSimulator, key: str = API_KEY) -> str:
    return f"{edge.url}features?apiKey={key}&contextSha=0"


def held_throughout(edge: EdgeSimulator, cluster: Cluster, seconds: float) -> None:
    """For ``seconds``, every worker keeps holding every feature of Edge's state."""
    expected = edge_state(edge)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for pid, held in worker_states(cluster).items():
            assert held == expected, f"worker {pid} holds {held}, Edge has {expected}"
        hold_for(0.3)


# -- one test per row ------------------------------------------------------------------------
def test_sse_path(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                  store: StoreReader) -> None:
    """Follows backend/edge-full/src/main/kotlin/io/featurehub/edge/rest/EventStreamResource.kt:
    ``GET /features/{environmentId}/{apiKey}`` (and the named-cache form) is the stream."""
    reader = sse(edge)
    try:
        assert reader.resp.status == 200
        assert reader.resp.headers["content-type"] == "text/event-stream"
    finally:
        reader.close()
    cluster = start(start_cluster)
    assert edge.wait_for_streams(2, SETTLE)
    assert {s.api_key for s in edge.streams()} == {API_KEY}
    wait_converged(edge, cluster, store, SETTLE, "features over the SSE path")


def test_stream_start(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                      store: StoreReader) -> None:
    """Follows backend/edge-full/src/main/java/io/featurehub/edge/client/
    TimedBucketClientConnection.java (discovery, initResponse) and backend/edge-common/src/
    main/kotlin/io/featurehub/edge/features/EtagHolder.kt (splitTag: quoted or invalid)."""
    reader = sse(edge)
    try:
        (id1, ack, ack_data), (etag, name, data) = events(reader, 2)
        assert (id1, ack, json.loads(ack_data)) == ("", "ack", {"status": "discover"})
        assert name == "features" and len(json.loads(data)) == 8
        assert etag and not etag.startswith('"')
    finally:
        reader.close()
    for last, first in ((etag, "ack"), ('"stale-etag"', "features")):
        reader = sse(edge, **{"Last-Event-ID": last})
        try:
            assert reader.next_event()[1] == first   # unquoted: as new; quoted: no ack
        finally:
            reader.close()
    edge.drop_after = 1.0
    reader = sse(edge, **{"Last-Event-ID": f'"{etag}"'})
    try:
        assert reader.next_event()[1] == "bye"       # the current etag, quoted: no change
    finally:
        reader.close()
    seen = len(edge.seen_last_event_ids)
    cluster = start(start_cluster)
    wait_for(lambda: len(edge.seen_last_event_ids) >= seen + 6, 30,
             what="workers to reconnect after bye")
    echoed = list(edge.seen_last_event_ids)[seen:]
    assert any(e == etag for e in echoed), echoed         # they echo the id...
    assert not any(e and e.startswith('"') for e in echoed)  # ...unquoted: full lists
    wait_converged(edge, cluster, store, SETTLE, "every worker after several reconnects")


def test_deleted_feature(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                         store: StoreReader) -> None:
    """Follows backend/mr-eventing/src/main/kotlin/io/featurehub/db/publish/DbCacheSource.kt
    (deleteFeatureChange, publishAppLevelFeatureChange: no value on DELETE) and
    backend/edge-common/src/main/java/io/featurehub/edge/FeatureTransformerUtils.java
    (no value: version 0, l false)."""
    held = next(f for f in edge.features() if f["key"] == "F03")
    reader = sse(edge)
    try:
        events(reader, 2)
        assert edge.wait_for_streams(1, 5)
        edge.delete_feature({"key": "F03"})
        _, name, data = reader.next_event()
        assert name == "delete_feature"
        assert json.loads(data) == {"id": held["id"], "key": "F03", "l": False, "version": 0,
                                    "type": held["type"]} == deleted_shape(held)
    finally:
        reader.close()
    edge.push_feature(held)
    cluster = start(start_cluster, 3)
    wait_converged(edge, cluster, store, SETTLE, "before the delete")
    edge.delete_feature({"key": "F03"})
    # within the propagation time: well before a drop (30 s) or an absence judgement
    wait_converged(edge, cluster, store, SETTLE, "F03 deleted by a version-0 delete_feature")


def test_retired_feature(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                         store: StoreReader) -> None:
    """Follows backend/edge-full/src/main/java/io/featurehub/edge/client/
    TimedBucketClientConnection.java (notifyFeature: retired -> DELETE_FEATURE with the
    transformed feature) and backend/edge-common/src/main/kotlin/io/featurehub/edge/features/
    FeatureRequesterSource.kt (getApiKeyDetails(..., excludeRetired = true))."""
    cluster = start(start_cluster, 3)
    wait_converged(edge, cluster, store, SETTLE, "before the retire")
    held = next(f for f in edge.features() if f["key"] == "F04")
    reader = sse(edge)
    try:
        events(reader, 2)
        assert edge.wait_for_streams(3, 5)
        retired = edge.retire_feature("F04")
        _, name, data = reader.next_event()
        assert (name, json.loads(data)) == ("delete_feature", retired)
        assert retired["version"] > held["version"] and "value" in retired
    finally:
        reader.close()
    assert "F04" not in {f["key"] for f in json.loads(get(poll_url(edge)).data)[0]["features"]}
    wait_converged(edge, cluster, store, SETTLE, "F04 retired")
    back = edge.unretire_feature("F04")
    assert back["version"] > retired["version"]
    wait_converged(edge, cluster, store, SETTLE, "F04 unretired at a newer version")


def test_full_list(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                   store: StoreReader) -> None:
    """Follows backend/edge-full/src/main/java/io/featurehub/edge/client/
    TimedBucketClientConnection.java (initResponse: SUCCESS writes every feature)."""
    for _ in range(2):
        reader = sse(edge)
        try:
            _, (_, _, data) = events(reader, 2)
            assert sorted(f["key"] for f in json.loads(data)) == sorted(edge_state(edge))
        finally:
            reader.close()
    cluster = start(start_cluster, 2)
    wait_converged(edge, cluster, store, SETTLE, "before the unheard delete")
    edge.go_down()                                  # nobody connected hears the delete
    edge.delete_feature({"key": "F05"})
    edge.come_up()
    wait_converged(edge, cluster, store, SETTLE + 2, "F05 gone: lists lack it")


def test_stream_end(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                    store: StoreReader) -> None:
    """Follows backend/edge-full/src/main/java/io/featurehub/edge/bucket/
    EventOutputBucketService.java (dropAfterSeconds = 30, kickout -> expireConnections ->
    close(true): TimedBucketClientConnection writes bye {"status":"closed"})."""
    assert EdgeSimulator().drop_after == 30.0
    edge.drop_after = 1.0
    reader = sse(edge)
    try:
        names = [e[1] for e in events(reader, 3)]
        assert names == ["ack", "features", "bye"]
        with pytest.raises(EOFError):
            reader.next_event()
    finally:
        reader.close()
    cluster = start(start_cluster, 2)
    wait_converged(edge, cluster, store, SETTLE, "before the drops")
    since, started = edge.total_stream_requests, time.monotonic()
    held_throughout(edge, cluster, 5.0)
    elapsed = time.monotonic() - started
    requests = edge.total_stream_requests - since
    assert requests >= 2, "workers did not reconnect after bye"
    assert requests <= 2 * (elapsed / 1.0 + 2), f"{requests} requests in {elapsed:.1f} s"


def test_heartbeat(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                   store: StoreReader) -> None:
    """Follows backend/edge-full/src/main/java/io/featurehub/edge/client/
    TimedBucketClientConnection.java (heartbeat: ACK "❤️") and backend/edge-full/src/main/
    java/io/featurehub/edge/bucket/EventOutputBucketService.java (heartbeatAfterSeconds = 0)."""
    assert EdgeSimulator().heartbeat_period is None
    edge.heartbeat_period, edge.drop_after = 0.3, None
    reader = sse(edge)
    try:
        _, _, (_, name, data) = events(reader, 3)
        assert (name, json.loads(data)) == ("ack", "❤️")
    finally:
        reader.close()
    cluster = start(start_cluster, 2)
    wait_converged(edge, cluster, store, SETTLE, "with heartbeats")
    connections = edge.total_stream_connections
    held_throughout(edge, cluster, 3.0)
    assert edge.total_stream_connections == connections
    assert not [line for line in fh_log_lines(cluster) if "WARNING" in line or "ERROR" in line]


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_unknown_key(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                     transport: str) -> None:
    """Follows backend/edge-full/src/main/java/io/featurehub/edge/client/
    TimedBucketClientConnection.java (initResponse NO_SUCH_KEY_IN_CACHE -> failed("Unrecognized
    API key. Please stop requesting.") -> close(false): no bye) and backend/edge-common/src/
    main/kotlin/io/featurehub/edge/rest/FeatureGet.kt (all keys unknown: 404)."""
    edge.keys_unknown = True
    reader = sse(edge)
    try:
        assert reader.resp.status == 200
        assert [e[1:] for e in events(reader, 2)] == [
            ("ack", '{"status": "discover"}'),
            ("failure", '{"status": "Unrecognized API key. Please stop requesting."}')]
        with pytest.raises(EOFError):
            reader.next_event()
    finally:
        reader.close()
    assert get(poll_url(edge)).status == 404
    cluster = start(start_cluster, 2, FH_PREFORK_EDGE=transport, FEATUREHUB_POLL_INTERVAL="1",
                    FH_PREFORK_EDGE_BACKOFF_MAX="4")
    wait_for(lambda: all(s["edge_state"] == "key_not_found"
                         for s in cluster.statuses().values()), SETTLE,
             what="every worker in state key_not_found")
    since = edge.total_stream_requests + edge.total_poll_requests
    started = time.monotonic()
    hold_for(8.0)
    requests = edge.total_stream_requests + edge.total_poll_requests - since
    per_worker = requests / 2
    # backed off to the 4 s cap: uniform(2, 4) s apart, so at most 8 / 2 + 1 each
    assert per_worker <= 5, f"{per_worker:.1f} requests per worker in " \
                            f"{time.monotonic() - started:.1f} s"
    lines = fh_log_lines(cluster)
    assert any("ERROR" in line and ENV_ID in line for line in lines), lines[-5:]
    assert not any("secret" in line for line in lines)


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_cache_not_ready(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                         store: StoreReader, transport: str) -> None:
    """Follows backend/edge-full/src/main/java/io/featurehub/edge/bucket/
    EventOutputBucketService.java (dachaIsUnavailable: a random slot of delaySlots = 10 s,
    then close() with bye) and backend/edge-common/src/main/kotlin/io/featurehub/edge/rest/
    FeatureGet.kt (DACHA_NOT_READY: 503)."""
    edge.not_ready, edge.not_ready_bye_after = True, (0.2, 0.6)
    assert get(poll_url(edge)).status == 503
    reader = sse(edge)
    try:
        assert [e[1] for e in events(reader, 2)] == ["ack", "bye"]
    finally:
        reader.close()
    edge.not_ready = False
    cluster = start(start_cluster, 2, FH_PREFORK_EDGE=transport, FEATUREHUB_POLL_INTERVAL="1")
    wait_converged(edge, cluster, store, SETTLE, "before the cache goes away")
    edge.not_ready = True
    edge.drop_streams()
    held_throughout(edge, cluster, 4.0)
    edge.not_ready = False
    wait_converged(edge, cluster, store, SETTLE, "after the cache is back")


def test_poll(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
              store: StoreReader) -> None:
    """Follows backend/edge-common/src/main/kotlin/io/featurehub/edge/rest/FeatureGet.kt
    (processGet: 400 without keys, 304 for one unchanged key, 404, quoted etag on 200)."""
    first = get(poll_url(edge))
    assert first.status == 200
    body = json.loads(first.data)
    assert [e["id"] for e in body] == [ENV_ID] and len(body[0]["features"]) == 8
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    not_modified = get(poll_url(edge), **{"If-None-Match": etag})
    assert (not_modified.status, not_modified.headers["etag"]) == (304, etag)
    assert get(f"{edge.url}features?contextSha=0").status == 400
    edge.keys_unknown = True
    assert get(poll_url(edge)).status == 404
    edge.keys_unknown = False
    cluster = start(start_cluster, 2, FH_PREFORK_EDGE="poll", FEATUREHUB_POLL_INTERVAL="1")
    wait_converged(edge, cluster, store, SETTLE, "polled")
    seen = edge.total_not_modified
    wait_for(lambda: edge.total_not_modified >= seen + 2, SETTLE,
             what="polls with If-None-Match answered 304")
    edge.push_feature(dict(edge.features()[0], version=9, value=False))
    wait_converged(edge, cluster, store, SETTLE, "an update polled")


def test_cache_control_max_age(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                               store: StoreReader) -> None:
    """Follows backend/edge-common/src/main/kotlin/io/featurehub/edge/utils/
    CacheControlResponseWrapper.kt (wrapResponse runs for 200, 304 and 404 alike) and
    backend/edge-common/src/main/kotlin/io/featurehub/edge/rest/FeatureGet.kt."""
    edge.poll_max_age = 3
    first = get(poll_url(edge))
    assert first.headers["cache-control"] == "max-age=3"
    again = get(poll_url(edge), **{"If-None-Match": first.headers["etag"]})
    assert (again.status, again.headers["cache-control"]) == (304, "max-age=3")
    edge.keys_unknown = True
    assert get(poll_url(edge)).headers["cache-control"] == "max-age=3"
    edge.keys_unknown, edge.poll_max_age = False, None
    cluster = start(start_cluster, 1, FH_PREFORK_EDGE="poll", FEATUREHUB_POLL_INTERVAL="1")
    wait_converged(edge, cluster, store, SETTLE, "polled every second")
    edge.poll_max_age = 3          # from now on only 304s carry it: nothing changes
    hold_for(2.5)                  # one poll at the old interval sees it
    count = len(edge.poll_times)
    hold_for(7.0)
    polls = len(edge.poll_times) - count
    assert polls <= 4, f"{polls} polls in 7 s: the 304's max-age=3 was not honoured"


def test_status_236(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                    store: StoreReader) -> None:
    """Follows backend/edge-api/sse-api.yaml (236 "environment stagnant") and
    backend/edge-common/src/main/kotlin/io/featurehub/edge/rest/FeatureGet.kt (never answers
    236: its statuses are 200, 304, 404 and 503)."""
    assert get(poll_url(edge)).status == 200   # the default never says 236
    edge.stagnant = True
    assert get(poll_url(edge)).status == 236
    cluster = start(start_cluster, 2, FH_PREFORK_EDGE="poll", FEATUREHUB_POLL_INTERVAL="1")
    wait_converged(edge, cluster, store, SETTLE, "the 236 list applied")
    wait_for(lambda: all(s["edge_state"] == "stale" for s in cluster.statuses().values()),
             SETTLE, what="polling paused on 236")


def test_config_edge_stale(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                           store: StoreReader) -> None:
    """Follows backend/edge-api/sse-api.yaml (SSEResultState: config; nothing in edge-full
    writes it). The JavaScript SDK takes ``edge.stale``'s value as seconds, then reconnects."""
    cluster = start(start_cluster, 1)
    wait_converged(edge, cluster, store, SETTLE, "before edge.stale")
    edge.send_config({"edge.stale": 2})
    wait_for(lambda: all(s["edge_state"] == "stale" for s in cluster.statuses().values()),
             SETTLE, what="the worker stale")
    edge.push_feature(dict(edge.features()[0], version=9, value=False))  # not heard: stale
    wait_converged(edge, cluster, store, 2 + SETTLE, "resumed after edge.stale's 2 seconds")


def test_poll_only_edge(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                        store: StoreReader) -> None:
    """Follows backend/edge-rest/src/main/kotlin/io/featurehub/edge/resources/EdgeResource.kt
    (features(): throw WebApplicationException("SSE not supported in GET-Edge", 501))."""
    edge.poll_only = True
    assert get(f"{edge.url}features/{API_KEY}").status == 501
    assert get(poll_url(edge)).status == 200
    cluster = start(start_cluster, 2, FEATUREHUB_POLL_INTERVAL="1")
    wait_converged(edge, cluster, store, SETTLE, "features by polling a poll-only Edge")
    assert edge.total_stream_requests <= 2 * 3, "workers kept asking the stream"
    transports = {s["edge"].get("transport") for s in cluster.statuses().values()}
    assert transports == {"poll"}, f"status() says {transports}: it should say it polls"


def test_many_clients(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                      store: StoreReader) -> None:
    """Follows backend/edge-full/src/main/kotlin/io/featurehub/edge/StreamingFeatureSource.kt
    (no per-client cap; maximumEnvironments = 5000 environments)."""
    readers = [sse(edge) for _ in range(6)]
    try:
        for reader in readers:
            assert reader.next_event()[1] == "ack"
        assert edge.wait_for_streams(6, 5)
    finally:
        for reader in readers:
            reader.close()
    assert edge.wait_until(lambda: edge.open_streams == 0, 5)
    edge.max_concurrent_streams = 0
    cluster = start(start_cluster, 3)
    wait_converged(edge, cluster, store, SETTLE, "three workers")
    hold_for(2.0)
    assert edge.open_streams == 3 and edge.max_concurrent_streams == 3


def test_every_row_has_its_test() -> None:
    """The table cannot claim a row no test checks: each row names a test here whose
    docstring cites the row's source files."""
    module = sys.modules[__name__]
    assert len(ROWS) == 15
    for row in ROWS:
        test = getattr(module, row.test, None)
        assert test is not None, row.test
        doc = " ".join((test.__doc__ or "").split()).replace("/ ", "/")
        paths = re.findall(r"[\w/.-]+\.(?:kt|java|yaml)", row.source)
        assert paths, row
        for path in paths:
            assert path.rsplit("/", 1)[-1] in doc, f"{row.test} does not cite {path}"


# -- the table -------------------------------------------------------------------------------
def results(junit: Path) -> dict[str, str]:
    """test name -> "passes" / "fails" (every parametrization must pass)."""
    out: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "").split("[")[0]
        failed = any(child.tag in ("failure", "error") for child in case)
        if failed or out.get(name) == "fails":
            out[name] = "fails"
        elif child_skipped(case):
            out.setdefault(name, "skipped")
        else:
            out[name] = "passes"
    return out


def child_skipped(case: ET.Element) -> bool:
    return any(child.tag == "skipped" for child in case)


def table(outcomes: dict[str, str] | None = None) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| protocol point | what Edge does | what fh-prefork does |"
    rule = "|---|---|---|"
    if outcomes is not None:
        head, rule = head + " checked by |", rule + "---|"
    lines = ["# The Edge protocol, and what fh-prefork does with it", "",
             "Generated by `python -m tests.edge.test_conformance` from `ROWS` in "
             "`tests/edge/test_conformance.py`; every row is a test there, which cites the "
             "FeatureHub server source it follows."]
    if outcomes is not None:
        lines[-1] += (" The last column is whether that test passed when the table was "
                      "written: a failing row's fh-prefork column is what its test requires, "
                      "not yet what fh-prefork does.")
    lines += ["", head, rule]
    for row in ROWS:
        files = ", ".join(f"`{p.rsplit('/', 1)[-1]}`"
                          for p in re.findall(r"[\w/.-]+\.(?:kt|java|yaml)", row.source))
        edge_text = f"{row.edge} ({files})"
        line = f"| {cell(row.point)} | {cell(edge_text)} | {cell(row.fh_prefork)} |"
        if outcomes is not None:
            line += f" `{row.test}`: {outcomes.get(row.test, 'not run')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="write the markdown here (default: stdout)")
    parser.add_argument("--run", action="store_true",
                        help="run the tests first and say which rows pass")
    args = parser.parse_args(argv)
    outcomes = None
    if args.run:
        junit = Path(".conformance-junit.xml")
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={junit}", __file__], check=False, timeout=1800)
        outcomes = results(junit)
        junit.unlink(missing_ok=True)
    text = table(outcomes)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
