"""A controllable FeatureHub Edge on loopback.

It speaks the same wire protocol the FeatureHub SDKs use (SSE on ``GET /features/{key}``,
polling on ``GET /features?apiKey=...``) so that tests, ``fh-prefork demo`` and the docker
examples can exercise real sockets without a FeatureHub installation, and it can misbehave on
demand (go down, answer 500/404, close streams after every event) to prove the supervision.

Its defaults are what the real Edge's source does (edge-full and edge-common in
``featurehub-io/featurehub``; ``tests/edge/test_conformance.py`` has one test per point, citing
the file): a stream starts with ``ack {"status":"discover"}`` and a ``features`` list whose SSE
``id:`` is the etag, unquoted; a ``Last-Event-ID`` counts only when quoted; a deleted feature is
``delete_feature`` at version 0 without value; a retired one is ``delete_feature`` at its real
version and left out of lists; every stream gets ``bye {"status":"closed"}`` after
``drop_after`` (30 s); an unknown key's stream is 200, ``ack``, ``failure``, close; a cache not
ready is 503 on polls and a late ``bye`` on streams; ``poll_only`` answers the stream 501.
Faults tests need are switches: ``serve_empty``, ``hide`` (a short list), ``replica`` plus
``freeze``/``catch_up`` (a second Edge, lagging), ``keys_unknown``, ``set_filter``. The old,
friendlier behaviours stay as explicit options (``delete_sends_held_version``,
``legacy_unknown_key_404``, ``legacy_event_ids``, ``keepalive_interval``).

Run it standalone with ``python -m fh_prefork.testing.edge_simulator --port 8085 --api-key
KEY``; a simulator in another process is driven through the ``/_sim/...`` control API (see
the docs' testing page, ``docs/testing.md``), which checks what it is given: a malformed
feature is answered 400 with the reason, never installed for every worker to ignore.
``{"key": ..., "value": ...}`` is enough there: the type is inferred and the version bumped.
Versions the simulator picks itself (that short form, ``--feature``) start from the clock in
milliseconds, so they are above anything a store kept from an earlier run; versions given by
code (``make_feature``) are used as given.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import logging
import queue
import random
import select
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("fh_prefork.testing.edge_simulator")

__all__ = ["EdgeSimulator", "StreamInfo", "deleted_shape", "main", "make_feature"]

#: how many recent polls and stream starts the simulator remembers for tests
_RECENT = 10_000

# Sentinel put on a stream queue to make it say ``bye`` and close.
_BYE = object()


def make_feature(
    key: str,
    value: Any,
    version: int = 1,
    type: str = "BOOLEAN",
    id: str | None = None,
) -> dict[str, Any]:
    """Build a feature state shaped like the ones Edge sends (stable id per key)."""
    return {
        "id": id if id is not None else str(uuid.uuid5(uuid.NAMESPACE_URL, "fh-prefork:" + key)),
        "key": key,
        "l": False,
        "version": version,
        "type": type,
        "value": value,
        "strategies": [],
    }


def clock_version() -> int:
    """A version above any this simulator gave before a restart: milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


#: Fields of the control API's short form; a body with any other field is a full state.
SHORT_FORM = frozenset({"key", "value", "type"})


def control_feature(body: Any, current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The feature state a control request asks for; ``ValueError`` with the reason if malformed.

    Short form ``{"key", "value"[, "type"]}``: the type is the current feature's, else
    inferred from the value (a JSON object or array becomes a ``JSON`` feature); the id is
    kept; the version is the current one plus one, at least :func:`clock_version`. Anything
    else must be a whole feature state as Edge sends it.
    """
    from ..features import feature_problem  # the check every worker applies on arrival

    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError("'key' must be a non-empty string")
    if set(body) <= SHORT_FORM:
        if "value" not in body:
            raise ValueError(f"{key}: 'value' is missing")
        value = body["value"]
        ftype = body.get("type") or (current or {}).get("type") or _inferred_type(value)
        if ftype == "JSON" and isinstance(value, (dict, list)):
            value = json.dumps(value)
        old_version = (current or {}).get("version")
        version = clock_version()
        if isinstance(old_version, int) and not isinstance(old_version, bool):
            version = max(version, old_version + 1)
        feature = make_feature(key, value, version, type=ftype,
                               id=(current or {}).get("id"))
    else:
        feature = dict(body)
    problem = feature_problem(feature)
    if problem:
        raise ValueError(f"{key}: {problem}")
    return feature


def _inferred_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, (int, float)):
        return "NUMBER"
    if isinstance(value, (dict, list)):
        return "JSON"
    if isinstance(value, str):
        return "STRING"
    raise ValueError(f"cannot infer a feature type from {value!r}: give 'type'")


def environment_id(api_key: str) -> str:
    """Environment id embedded in an API key: ``a/b/c*d`` -> ``b``, ``b/c*d`` -> ``b``."""
    parts = api_key.split("/")
    if len(parts) >= 3:
        return parts[1]
    return parts[0]


@dataclass(frozen=True)
class StreamInfo:
    """A currently open SSE stream, as seen by the simulator."""

    id: int
    peer: tuple[str, int]
    api_key: str
    opened_at: float


class _Stream:
    def __init__(self, info: StreamInfo) -> None:
        self.info = info
        # (event, data) tuples, or _BYE
        self.queue: queue.Queue[object] = queue.Queue()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: EdgeSimulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a worker killed, a stream cut) is routine, not a traceback."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, ssl.SSLError, TimeoutError)):
            log.debug("client %s went away: %r", client_address, err)
            return
        super().handle_error(request, client_address)


def _set(name: str) -> Callable[[EdgeSimulator, bool], None]:
    return lambda sim, enabled: setattr(sim, name, enabled)


#: ``POST /_sim/<switch>?enabled=1|0``: Edge faults switched on and off over HTTP
_SWITCHES: dict[str, Callable[[EdgeSimulator, bool], None]] = {
    "/_sim/empty": lambda sim, enabled: sim.serve_empty(enabled),
    "/_sim/unknown_key": _set("keys_unknown"),
    "/_sim/not_ready": _set("not_ready"),
    "/_sim/poll_only": _set("poll_only"),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "fh-prefork-edge-simulator/1"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()
        self.server.sim._track_connection(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim._track_connection(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    # -- helpers -------------------------------------------------------------------------------
    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)
        self.wfile.flush()

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw.decode("utf-8")) if raw else None

    # -- routing -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        sim = self.server.sim
        parts = urlsplit(self.path)
        if parts.path == "/_sim/state":
            self._send(200, sim.state())
            return
        if sim.response_delay and parts.path.startswith("/features"):
            time.sleep(sim.response_delay)    # an Edge far away: every answer starts late
        failure = sim._failure_status
        if failure is not None:
            if parts.path.startswith("/features"):
                sim._count_request(parts.path == "/features")
            self._send(failure, {"error": "simulated failure"})
            return
        if parts.path == "/features":
            sim._count_request(True)
            self._poll(parse_qs(parts.query))
        elif parts.path.startswith("/features/"):
            sim._count_request(False)
            self._stream(unquote(parts.path[len("/features/"):]))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        sim = self.server.sim
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        try:
            body = self._body()
            if parts.path == "/_sim/feature":
                stream = query.get("stream", [None])[0]
                installed = sim.control_push(body, None if stream is None else int(stream))
                self._send(200, {"ok": True, "feature": installed})
                return
            elif parts.path == "/_sim/delete":
                stream = query.get("stream", [None])[0]
                if not isinstance(body, dict) or not isinstance(body.get("key"), str):
                    raise ValueError('expected {"key": "..."}')
                if body["key"] not in {f["key"] for f in sim.features()}:
                    self._send(404, {"error": f"no feature {body['key']!r}"})
                    return
                sim.delete_feature(body, None if stream is None else int(stream))
            elif parts.path == "/_sim/features":
                if not isinstance(body, list):
                    raise ValueError("expected a JSON array of features")
                sim.set_features(sim.control_features(body))
            elif parts.path == "/_sim/config":
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                sim.send_config(body)
            elif parts.path == "/_sim/failure":
                status = query.get("status", ["none"])[0]
                sim.set_failure(None if status.lower() in ("none", "", "0") else int(status))
            elif parts.path == "/_sim/delay":
                seconds = float(query.get("seconds", ["0"])[0])
                if not 0 <= seconds <= 600:     # nan and inf fail this too
                    raise ValueError("seconds must be from 0 to 600")
                sim.response_delay = seconds
            elif parts.path == "/_sim/close_after_each_event":
                enabled = query.get("enabled", ["1"])[0].lower() in ("1", "true", "yes")
                sim.close_after_each_event = enabled
            elif parts.path in ("/_sim/retire", "/_sim/unretire"):
                if not isinstance(body, dict) or not isinstance(body.get("key"), str):
                    raise ValueError('expected {"key": "..."}')
                change = sim.retire_feature if parts.path == "/_sim/retire" else \
                    sim.unretire_feature
                self._send(200, {"ok": True, "feature": change(body["key"])})
                return
            elif parts.path in _SWITCHES:
                enabled = query.get("enabled", ["1"])[0].lower() in ("1", "true", "yes")
                _SWITCHES[parts.path](sim, enabled)
            elif parts.path == "/_sim/hide":
                if not isinstance(body, list) or not all(isinstance(k, str) for k in body):
                    raise ValueError("expected a JSON array of keys")
                sim.hide(body)
            elif parts.path == "/_sim/drop_streams":
                sim.drop_streams()
            elif parts.path == "/_sim/down":
                seconds = float(query.get("seconds", ["5"])[0])
                self._send(202, {"down_for": seconds})
                sim._down_for(seconds)
                return
            else:
                self._send(404, {"error": "not found"})
                return
        except (ValueError, TypeError, KeyError) as exc:
            self._send(400, {"error": str(exc)})
            return
        self._send(200, {"ok": True})

    # -- protocol ------------------------------------------------------------------------------
    def _poll(self, query: dict[str, list[str]]) -> None:
        """``GET /features?apiKey=..`` as Edge's ``FeatureGet.kt`` answers it."""
        sim = self.server.sim
        keys = list(dict.fromkeys(query.get("apiKey", []) or query.get("sdkUrl", [])))
        if not keys:
            self._send(400, {"error": "no apiKey"})
            return
        cache_control = ({"Cache-Control": f"max-age={sim.poll_max_age}"}
                         if sim.poll_max_age is not None else {})
        if sim.not_ready:
            self._send(503, "cache layer not ready, try again shortly")
            return
        known = [k for k in keys if sim._key_valid(k)]
        if not known:
            self._send(404, None, cache_control)
            return
        features, tag = sim._listing(known[0])
        etag = f'"{tag}"'
        sim._record_poll()
        if len(keys) == 1 and self.headers.get("If-None-Match") == etag:
            sim._record_poll(not_modified=True)
            self.send_response(304)
            for name, value in {"ETag": etag, **cache_control}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
            return
        body = [{"id": environment_id(k), "features": sim._listing(k)[0]} for k in known]
        self._send(236 if sim.stagnant else 200, body, {"ETag": etag, **cache_control})

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """True when the client closed its side (readable socket with EOF)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            if isinstance(self.connection, ssl.SSLSocket):
                return self._tls_client_gone(self.connection)
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True

    @staticmethod
    def _tls_client_gone(conn: ssl.SSLSocket) -> bool:
        """TLS has no peek: read without blocking (an SSE client sends nothing after its
        request), where a record that carries no data (a session ticket) is not an EOF."""
        timeout = conn.gettimeout()
        conn.settimeout(0)
        try:
            return conn.recv(1) == b""
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        finally:
            conn.settimeout(timeout)

    def _stream(self, api_key: str) -> None:
        """``GET /features/{key}`` as edge-full answers it (``TimedBucketClientConnection``)."""
        sim = self.server.sim
        if sim.poll_only:   # edge-rest: EdgeResource.kt throws 501 on the SSE path
            self._send(sim.poll_only_status, {"error": "SSE not supported in GET-Edge"})
            return
        if sim.legacy_unknown_key_404 and not sim._key_valid(api_key):
            self._send(404, {"error": "unknown api key"})
            return
        peer = (str(self.client_address[0]), int(self.client_address[1]))
        stream, features, tag = sim._open_stream(peer, api_key)
        if sim.legacy_event_ids:
            tag = ""
        self.close_connection = True
        # EtagHolder.kt: Last-Event-ID counts only when quoted; the id Edge sends is not
        last = self.headers.get("Last-Event-ID")
        sim.seen_last_event_ids.append(last)
        valid_etag = (last is not None and len(last) >= 2 and last.startswith('"')
                      and last.endswith('"'))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if not valid_etag:
                self._write_chunk(sim._event("ack", sim.ack_data))
            if not sim._key_valid(api_key):
                self._write_chunk(sim._event("failure", json.dumps(
                    {"status": "Unrecognized API key. Please stop requesting."})))
            elif sim.not_ready:
                low, high = sim.not_ready_bye_after
                self._pump(stream, deadline=time.monotonic() + random.uniform(low, high),
                           updates=False)
            else:
                if not (valid_etag and last == f'"{tag}"'):   # NO_CHANGE sends no list
                    self._write_chunk(sim._event("features", json.dumps(features),
                                                 event_id=tag or None))
                if not sim.close_after_each_event:
                    drop = sim.drop_after
                    self._pump(stream, deadline=None if not drop else time.monotonic() + drop)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        finally:
            sim._close_stream(stream)

    def _pump(self, stream: _Stream, deadline: float | None, updates: bool = True) -> None:
        """Send the stream's events until ``bye`` (the drop time, or a ``_BYE``) or the
        client goes; heartbeats and keepalive comments while idle, when configured."""
        sim = self.server.sim
        last_write = last_beat = time.monotonic()
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                self._write_chunk(sim._event("bye", sim.bye_data))
                return
            try:
                item = stream.queue.get(timeout=0.05)
            except queue.Empty:
                if self._client_gone():
                    return
                now = time.monotonic()
                if sim.heartbeat_period and now - last_beat >= sim.heartbeat_period:
                    self._write_chunk(sim._event("ack", '"\u2764\ufe0f"'))
                    last_beat = last_write = now
                if sim.keepalive_interval and now - last_write >= sim.keepalive_interval:
                    self._write_chunk(b": keepalive\n\n")
                    last_write = now
                continue
            if item is _BYE:
                self._write_chunk(sim._event("bye", sim.bye_data))
                return
            if not updates:
                continue
            assert isinstance(item, tuple)
            name, data = item
            self._write_chunk(sim._event(name, data))
            last_write = time.monotonic()
            if sim.close_after_each_event:
                return


def deleted_shape(feature: Mapping[str, Any]) -> dict[str, Any]:
    """What Edge sends for a deleted feature: no value, version 0 (``FeatureTransformerUtils``
    on a ``CacheEnvironmentFeature`` without value; Jackson leaves the nulls out)."""
    return {"id": feature.get("id"), "key": feature.get("key"), "l": False, "version": 0,
            "type": feature.get("type", "BOOLEAN")}


class EdgeSimulator:
    """A FeatureHub Edge for one environment, controllable from the test or over HTTP.

    Its defaults are what the real Edge server's source does (see the module docstring of
    ``tests/edge/test_conformance.py`` for the rows and files); its older, friendlier
    behaviours are explicit options (``delete_sends_held_version``, ``legacy_unknown_key_404``,
    ``keepalive_interval``, ``drop_after=None``).
    """

    close_after_each_event: bool
    """When True every stream is closed right after its first data event (the initial
    ``features``), like an Edge or proxy that drops streams after each event."""

    poll_max_age: int | None
    """When set, poll answers (200, 304 and 404) carry ``Cache-Control: max-age=N``
    (``CacheControlResponseWrapper.kt``)."""

    response_delay: float
    """Seconds every Edge answer (stream or poll) waits before it starts: an Edge far away
    or a slow TLS handshake, as production sees it."""

    keepalive_interval: float | None
    """Seconds between ``: keepalive`` comments on an idle stream (None: none, as Edge)."""

    drop_after: float | None
    """``edge.sse.drop-after-seconds``: each stream says ``bye {"status":"closed"}`` and
    closes this long after it opened (real default 30; None or 0: never)."""

    heartbeat_period: float | None
    """``edge.sse.heartbeat-period``: an ``ack "❤️"`` this often (None: off, Edge's default)."""

    not_ready: bool
    """Edge's cache (dacha) not ready: polls get 503, streams ``ack`` and later ``bye``."""

    not_ready_bye_after: tuple[float, float]
    """Range of the random delay before a not-ready stream's ``bye`` (Edge: 0-10 s)."""

    poll_only: bool
    """An edge-rest (GET-only) Edge: the SSE path answers ``poll_only_status`` (501)."""

    poll_only_status: int

    keys_unknown: bool
    """Every API key is unknown (a deleted service account): SSE 200 + ``failure``, poll 404."""

    delete_sends_held_version: bool
    """Old simulator behaviour: ``delete_feature`` carries the whole held feature."""

    legacy_unknown_key_404: bool
    """Old simulator behaviour: an unknown key's stream gets HTTP 404."""

    stagnant: bool
    """Poll answers 236 ("environment stagnant", in the API spec; the open-source Edge never
    sends it)."""

    legacy_event_ids: bool
    """Old simulator behaviour: no etag in the ``features`` event's ``id:``."""

    def __init__(
        self,
        api_keys: list[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keepalive_interval: float | None = None,
        tls: ssl.SSLContext | None = None,
        drop_after: float | None = 30.0,
        heartbeat_period: float | None = None,
        replica_of: EdgeSimulator | None = None,
    ) -> None:
        """``tls``: a server-side context, to serve https; its certificate must name
        ``localhost``, the host :attr:`url` then gives. ``replica_of``: another Edge serving
        the same environment (same features, own streams, port and faults), see
        :meth:`replica`."""
        self._tls = tls
        self._api_keys = None if api_keys is None else list(api_keys)
        self._host = host
        self._port = port
        self.keepalive_interval = keepalive_interval
        self.drop_after = drop_after
        self.heartbeat_period = heartbeat_period
        self.close_after_each_event = False
        self.response_delay = 0.0
        self.poll_max_age = None
        self.not_ready = False
        self.not_ready_bye_after = (0.0, 10.0)
        self.poll_only = False
        self.poll_only_status = 501
        self.keys_unknown = False
        self.delete_sends_held_version = False
        self.legacy_unknown_key_404 = False
        self.legacy_event_ids = False
        self.stagnant = False
        #: when each recent poll came (monotonic), and each recent stream's Last-Event-ID: the
        #: last _RECENT of each, so a simulator left running for days stays small
        self.poll_times: deque[float] = deque(maxlen=_RECENT)
        self.seen_last_event_ids: deque[str | None] = deque(maxlen=_RECENT)
        self.total_not_modified = 0
        self.ack_data = json.dumps({"status": "discover"})
        self.bye_data = json.dumps({"status": "closed"})
        self._cond: threading.Condition
        self._features: dict[str, dict[str, Any]]
        self._retired: dict[str, dict[str, Any]]
        self._members: list[EdgeSimulator]
        if replica_of is None:
            self._cond = threading.Condition()
            self._features, self._retired, self._members = {}, {}, []
        else:   # one environment: the same lock, dicts and member list
            self._cond = replica_of._cond
            self._features, self._retired = replica_of._features, replica_of._retired
            self._members = replica_of._members
        self._members.append(self)
        self._hidden: set[str] = set()
        self._views: dict[str, set[str]] = {}
        self._empty = False
        self._frozen: dict[str, dict[str, Any]] | None = None
        self._streams: dict[int, _Stream] = {}
        self._connections: set[socket.socket] = set()
        self._next_stream_id = 1
        self._failure_status: int | None = None
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._helper_threads: list[threading.Thread] = []
        self.total_stream_connections = 0
        self.total_stream_requests = 0
        self.total_poll_requests = 0
        self.max_concurrent_streams = 0

    def replica(self, **kwargs: Any) -> EdgeSimulator:
        """A second Edge for the same environment (not started): every change reaches both,
        unless one is :meth:`freeze`-d (a lagging replica) or serves a short list."""
        kwargs.setdefault("keepalive_interval", self.keepalive_interval)
        kwargs.setdefault("drop_after", self.drop_after)
        return EdgeSimulator(self._api_keys, self._host, replica_of=self, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> EdgeSimulator:
        """Bind and serve in a daemon thread; returns self for chaining."""
        self._stopped.clear()
        self._listen()
        return self

    def stop(self) -> None:
        """Say ``bye`` to every stream, stop listening and join the server threads."""
        self._stopped.set()
        self.go_down()
        for thread in self._helper_threads:
            thread.join(timeout=2)
        self._helper_threads.clear()

    def __enter__(self) -> EdgeSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Edge base URL with the trailing slash the SDK expects."""
        if self._tls is not None:
            return f"https://localhost:{self._port}/"
        return f"http://{self._host}:{self._port}/"

    def _listen(self) -> None:
        with self._cond:
            if self._server is not None:
                return
            server = _Server((self._host, self._port), _Handler)
            if self._tls is not None:   # each handshake on its request's thread, not in accept
                server.socket = self._tls.wrap_socket(server.socket, server_side=True,
                                                      do_handshake_on_connect=False)
            server.sim = self
            self._port = int(server.server_address[1])
            self._server = server
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"edge-simulator-{self._port}",
                daemon=True,
            )
            self._serve_thread = thread
        thread.start()

    def go_down(self) -> None:
        """Stop listening (connections are refused) and close every open connection."""
        with self._cond:
            server, thread = self._server, self._serve_thread
            self._server, self._serve_thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=2)
        with self._cond:
            for stream in self._streams.values():
                stream.queue.put(_BYE)
            # give streams a moment to say bye, then cut whatever is left (keep-alive polls...)
            self._cond.wait_for(lambda: not self._streams, timeout=1.0)
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._cond:
            self._cond.wait_for(lambda: not self._connections, timeout=1.0)

    def come_up(self) -> None:
        """Listen again on the same port."""
        self._listen()

    def _down_for(self, seconds: float) -> None:
        def run() -> None:
            self.go_down()
            if not self._stopped.wait(seconds):
                self.come_up()

        thread = threading.Thread(target=run, name="edge-simulator-down", daemon=True)
        self._helper_threads.append(thread)
        thread.start()

    def drop_streams(self) -> None:
        """Say ``bye`` to every open stream now (what the drop time does), so clients
        reconnect and get a full list."""
        with self._cond:
            for stream in self._streams.values():
                stream.queue.put(_BYE)

    # -- control -------------------------------------------------------------------------------
    def set_failure(self, status: int | None) -> None:
        """Answer every Edge request with this HTTP status (None: behave normally)."""
        self._failure_status = status

    def set_features(self, features: list[dict[str, Any]]) -> None:
        """Replace the environment and send a ``features`` event to every stream.

        A test's shortcut: the real Edge sends a full list only when a stream opens (this
        stands for what the next reconnect delivers); :meth:`apply_features` sends the
        per-feature events Edge sends for the same change."""
        with self._cond:
            self._features.clear()
            self._features.update({f["key"]: dict(f) for f in features})
            self._retired.clear()
            for member in self._members:
                member._send_list()

    def apply_features(self, features: list[dict[str, Any]]) -> None:
        """Replace the environment as Edge tells its open streams: a ``feature`` event per new
        or changed feature, a (version 0) ``delete_feature`` per removed one."""
        with self._cond:
            wanted = {f["key"]: dict(f) for f in features}
            for key in [k for k in self._features if k not in wanted]:
                self.delete_feature({"key": key})
            for key, feature in wanted.items():
                if self._features.get(key) != feature:
                    self.push_feature(feature)

    def push_feature(self, feature: dict[str, Any], stream_id: int | None = None) -> None:
        """Upsert a feature; send a ``feature`` event to every stream or only to ``stream_id``."""
        if not isinstance(feature, dict) or "key" not in feature:
            raise ValueError("a feature needs a key")
        with self._cond:
            self._features[feature["key"]] = dict(feature)
            self._retired.pop(feature["key"], None)
            self._broadcast("feature", json.dumps(feature), stream_id)

    def delete_feature(self, feature: dict[str, Any], stream_id: int | None = None, *,
                       held_version: bool | None = None) -> None:
        """Remove a feature; send ``delete_feature`` to every stream or one stream.

        As Edge: the feature's id, key and type, version 0 and no value (a delete publishes
        no value: ``DbCacheSource.kt``). ``held_version`` (or ``delete_sends_held_version``):
        the whole held feature instead, the simulator's old behaviour."""
        if not isinstance(feature, dict) or "key" not in feature:
            raise ValueError("a feature needs a key")
        with self._cond:
            removed = self._features.pop(feature["key"], None)
            self._retired.pop(feature["key"], None)
            held = removed if removed is not None else feature
            old = self.delete_sends_held_version if held_version is None else held_version
            payload = held if old else deleted_shape(held)
            self._broadcast("delete_feature", json.dumps(payload), stream_id)

    def retire_feature(self, key: str, version: int | None = None) -> dict[str, Any]:
        """Retire a feature (``flags.feature`` @retired): ``delete_feature`` with the whole
        feature at its real version (the retire is an update: version + 1 unless given);
        full lists leave it out from now on. Returns the retired state."""
        with self._cond:
            current = self._features.pop(key)
            retired = dict(current, version=current["version"] + 1 if version is None
                           else version)
            self._retired[key] = retired
            self._broadcast("delete_feature", json.dumps(retired), None)
            return dict(retired)

    def update_retired(self, key: str, **changes: Any) -> dict[str, Any]:
        """Change a retired feature (``flags.feature``: "I set the feature flag to on and
        unlocked" while retired): the update still says retired, so Edge sends it as another
        ``delete_feature`` at the newer version; lists still leave it out."""
        with self._cond:
            retired = self._retired[key]
            updated = {**retired, **changes, "version": retired["version"] + 1}
            self._retired[key] = updated
            self._broadcast("delete_feature", json.dumps(updated), None)
            return dict(updated)

    def unretire_feature(self, key: str, version: int | None = None) -> dict[str, Any]:
        """Unretire: the feature comes back as a ``feature`` event at a newer version."""
        with self._cond:
            retired = self._retired.pop(key)
            back = dict(retired, version=retired["version"] + 1 if version is None
                        else version)
            self._features[key] = back
            self._broadcast("feature", json.dumps(back), None)
            return dict(back)

    def serve_empty(self, enabled: bool = True) -> None:
        """Serve empty lists (streams and polls) while the features still exist: an Edge
        restarting with an empty cache, a misconfigured replica. Updates still go out."""
        with self._cond:
            self._empty = enabled
            self._cond.notify_all()

    def hide(self, keys: Iterable[str]) -> None:
        """Leave ``keys`` out of this Edge's lists while they still exist (a short list);
        ``hide([])`` shows everything again."""
        with self._cond:
            self._hidden = set(keys)
            self._cond.notify_all()

    def set_filter(self, api_key: str, keys: Iterable[str] | None) -> None:
        """Feature filters on ``api_key``'s service account (``feature-filters.feature``): it
        sees only ``keys`` (None: every feature). Open streams keep their list until they
        reconnect; later updates of features it cannot see do not reach it."""
        with self._cond:
            if keys is None:
                self._views.pop(api_key, None)
            else:
                self._views[api_key] = set(keys)

    def _visible(self, api_key: str, key: Any) -> bool:
        view = self._views.get(api_key)
        return view is None or key in view

    def freeze(self) -> None:
        """Lag: this Edge keeps serving the state it has now and forwards no update."""
        with self._cond:
            self._frozen = {k: dict(f) for k, f in self._features.items()}

    def catch_up(self) -> None:
        """End :meth:`freeze`: send open streams what changed meanwhile, as Edge would."""
        with self._cond:
            old, self._frozen = self._frozen, None
            if old is None:
                return
            for key, feature in old.items():
                if key not in self._features:
                    self._local_broadcast("delete_feature", json.dumps(
                        self._retired.get(key) or deleted_shape(feature)), None)
            for key, feature in self._features.items():
                if old.get(key) != feature:
                    self._local_broadcast("feature", json.dumps(feature), None)

    def control_push(self, body: Any, stream_id: int | None = None) -> dict[str, Any]:
        """``POST /_sim/feature``: check ``body`` (see :func:`control_feature`), then push it."""
        with self._cond:
            feature = control_feature(body, self._current(body))
            if stream_id is not None and stream_id not in self._streams:
                raise KeyError(f"no open stream {stream_id}")
            self.push_feature(feature, stream_id)
        return feature

    def _current(self, body: Any) -> dict[str, Any] | None:
        key = body.get("key") if isinstance(body, dict) else None
        return self._features.get(key) if isinstance(key, str) else None

    def control_features(self, bodies: list[Any]) -> list[dict[str, Any]]:
        """``POST /_sim/features``: every item checked; the first malformed one is the error."""
        with self._cond:
            out = []
            for i, body in enumerate(bodies):
                try:
                    out.append(control_feature(body, self._current(body)))
                except ValueError as err:
                    raise ValueError(f"item {i}: {err}") from None
        keys = [f["key"] for f in out]
        if len(set(keys)) != len(keys):
            raise ValueError("a key appears twice")
        return out

    def send_config(self, payload: dict[str, Any], stream_id: int | None = None) -> None:
        """Send a ``config`` event (e.g. ``{"edge.stale": true}``)."""
        with self._cond:
            self._broadcast("config", json.dumps(payload), stream_id)

    def send_raw_event(self, name: str, data: str, stream_id: int | None = None) -> None:
        """Send an arbitrary event, e.g. malformed JSON to test client robustness."""
        with self._cond:
            self._broadcast(name, data, stream_id)

    def _broadcast(self, name: str, data: str, stream_id: int | None) -> None:
        """To one stream of this Edge, or to every stream of every (unfrozen) replica."""
        if stream_id is not None:
            self._local_broadcast(name, data, stream_id)
            return
        for member in self._members:
            if member._frozen is None:
                member._local_broadcast(name, data, None)

    def _local_broadcast(self, name: str, data: str, stream_id: int | None) -> None:
        if stream_id is not None:
            if stream_id not in self._streams:
                raise KeyError(f"no open stream {stream_id}")
            self._streams[stream_id].queue.put((name, data))
            return
        key = None
        if name in ("feature", "delete_feature") and self._views:
            try:
                key = json.loads(data).get("key")
            except (ValueError, AttributeError):
                key = None
        for stream in self._streams.values():
            if key is None or self._visible(stream.info.api_key, key):
                stream.queue.put((name, data))

    def _send_list(self) -> None:
        if self._frozen is None:
            for stream in self._streams.values():
                stream.queue.put(("features", json.dumps(self._listing(stream.info.api_key)[0])))

    # -- inspection ----------------------------------------------------------------------------
    def features(self) -> list[dict[str, Any]]:
        """The environment's features: Edge's truth (hidden ones included, retired ones not)."""
        with self._cond:
            return [dict(f) for f in self._features.values()]

    def listed(self) -> list[dict[str, Any]]:
        """What this Edge's full lists hold now (short, empty or lagging when so set)."""
        return self._listing()[0]

    def streams(self) -> list[StreamInfo]:
        with self._cond:
            return [s.info for s in self._streams.values()]

    def stream_pid(self, stream: StreamInfo) -> int | None:
        """The pid of the process at the client end of ``stream`` (psutil; None if gone).

        Matched on both ends: the client's local port alone also names an
        unrelated connection of another process that reuses the number for
        another destination (the test process's own Redis client, say).
        """
        import psutil  # imported here: the simulator runs standalone without it

        for conn in psutil.net_connections(kind="tcp"):
            if (conn.pid and conn.laddr and conn.raddr and conn.laddr.port == stream.peer[1]
                    and conn.raddr.port == self._port):
                return int(conn.pid)
        return None

    @property
    def open_streams(self) -> int:
        with self._cond:
            return len(self._streams)

    def wait_for_streams(self, n: int, timeout: float) -> bool:
        """Wait until at least ``n`` streams are open; False on timeout."""
        return self.wait_until(lambda: len(self._streams) >= n, timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until ``predicate`` is true; it is re-checked on every change."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout)

    def state(self) -> dict[str, Any]:
        """JSON-friendly view for ``GET /_sim/state``."""
        with self._cond:
            return {
                "url": self.url,
                "features": [dict(f) for f in self._features.values()],
                "listed": [f["key"] for f in self._listing()[0]],
                "retired": [dict(f) for f in self._retired.values()],
                "streams": [
                    {
                        "id": s.info.id,
                        "peer": list(s.info.peer),
                        "api_key": s.info.api_key,
                        "opened_at": s.info.opened_at,
                    }
                    for s in self._streams.values()
                ],
                "open_streams": len(self._streams),
                "total_stream_connections": self.total_stream_connections,
                "total_stream_requests": self.total_stream_requests,
                "total_poll_requests": self.total_poll_requests,
                "max_concurrent_streams": self.max_concurrent_streams,
                "failure_status": self._failure_status,
                "close_after_each_event": self.close_after_each_event,
                "drop_after": self.drop_after,
                "not_ready": self.not_ready,
                "poll_only": self.poll_only,
                "keys_unknown": self.keys_unknown,
                "frozen": self._frozen is not None,
            }

    # -- used by the handler -------------------------------------------------------------------
    def _key_valid(self, api_key: str) -> bool:
        if self.keys_unknown:
            return False
        return self._api_keys is None or api_key in self._api_keys

    def _count_request(self, poll: bool) -> None:
        with self._cond:
            if poll:
                self.total_poll_requests += 1
            else:
                self.total_stream_requests += 1
            self._cond.notify_all()

    def _track_connection(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
            self._cond.notify_all()

    def _listing(self, api_key: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """The full list this Edge serves ``api_key`` now and its etag (unquoted: the SSE id)."""
        with self._cond:
            source = self._frozen if self._frozen is not None else self._features
            features = [] if self._empty else [
                dict(f) for k, f in source.items()
                if k not in self._hidden and (api_key is None or self._visible(api_key, k))]
        digest = hashlib.sha256(json.dumps(features, sort_keys=True).encode("utf-8"))
        return features, digest.hexdigest()[:20]

    def _snapshot(self) -> tuple[list[dict[str, Any]], str]:
        """The list and its quoted ETag (the poll header)."""
        features, tag = self._listing()
        return features, f'"{tag}"'

    def _event(self, name: str, data: str, event_id: str | None = None) -> bytes:
        """One SSE event; only ``features`` carries an ``id:`` (the etag, unquoted)."""
        lines = [] if event_id is None else [f"id: {event_id}"]
        lines.append(f"event: {name}")
        lines += [f"data: {line}" for line in data.split("\n")]
        return ("\n".join(lines) + "\n\n").encode("utf-8")

    def _open_stream(self, peer: tuple[str, int], api_key: str
                     ) -> tuple[_Stream, list[Any], str]:
        # registration and the initial snapshot happen atomically so no update is lost
        with self._cond:
            stream = _Stream(StreamInfo(self._next_stream_id, peer, api_key, time.time()))
            self._next_stream_id += 1
            self._streams[stream.info.id] = stream
            self.total_stream_connections += 1
            self.max_concurrent_streams = max(self.max_concurrent_streams, len(self._streams))
            features, tag = self._listing(api_key)
            self._cond.notify_all()
        return stream, features, tag

    def _record_poll(self, not_modified: bool = False) -> None:
        with self._cond:
            if not_modified:
                self.total_not_modified += 1
            else:
                self.poll_times.append(time.monotonic())

    def _close_stream(self, stream: _Stream) -> None:
        with self._cond:
            self._streams.pop(stream.info.id, None)
            self._cond.notify_all()


def _parse_feature_arg(text: str) -> dict[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    lowered = raw.strip().lower()
    version = clock_version()  # above anything a store kept from an earlier run
    if lowered in ("true", "false", "on", "off", "1", "0", "yes", "no"):
        return make_feature(key, lowered in ("true", "on", "1", "yes"), version)
    try:
        return make_feature(key, float(raw), version, type="NUMBER")
    except ValueError:
        return make_feature(key, raw, version, type="STRING")


def main(argv: list[str] | None = None) -> int:
    """``python -m fh_prefork.testing.edge_simulator``: serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="Local FeatureHub Edge simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", help="valid key (repeatable; default any)"
    )
    parser.add_argument(
        "--feature", action="append", type=_parse_feature_arg, default=[], help="KEY=true|false"
    )
    parser.add_argument("--keepalive", type=float, default=None,
                        help="seconds between keepalive comments (default: none, as Edge)")
    parser.add_argument("--drop-after", type=float, default=30.0,
                        help="seconds before each stream gets bye (Edge: 30; 0: never)")
    parser.add_argument("--heartbeat", type=float, default=None,
                        help="seconds between heartbeat acks (default: off, as Edge)")
    parser.add_argument("--poll-only", action="store_true",
                        help="answer the SSE path 501, as a GET-only Edge (edge-rest)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    sim = EdgeSimulator(args.api_keys, host=args.host, port=args.port,
                        keepalive_interval=args.keepalive, drop_after=args.drop_after or None,
                        heartbeat_period=args.heartbeat)
    sim.poll_only = args.poll_only
    sim.set_features(args.feature)
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim.start()
    print(f"FeatureHub Edge simulator listening on {sim.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
