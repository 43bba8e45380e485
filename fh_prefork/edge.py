"""A supervised FeatureHub Edge connection (SSE or polling).

The SDK's own clients are not fit for long-lived server processes: the streaming thread dies
for good on the first connection error, reconnects in a tight loop when a stream closes,
crashes on a ``config`` event without ``edge.stale``, and the polling timer chain dies on any
exception. ``SupervisedEdge`` speaks the same protocol but keeps one daemon thread alive until
``close()``, with capped, jittered exponential backoff and a floor between connection attempts,
so a misbehaving Edge can never turn N prefork workers into N tight reconnect loops.

Every answer is taken the way the real FeatureHub Edge means it (its source:
``backend/edge-full`` and ``backend/edge-common`` of featurehub-io/featurehub):

* an unknown or deleted API key is HTTP 404 on a poll and, on the stream, HTTP
  200 then ``ack``, ``failure {"status":"Unrecognized API key. Please stop
  requesting."}`` and a close (``TimedBucketClientConnection.initResponse``): both
  are ``key_not_found``, one ERROR naming the key's environment, exponential
  backoff up to ``backoff_max``;
* any other ``failure`` (a cache error) is transient: backoff, never "delivered";
* ``ack`` (the stream's ``discover``, and the heartbeat's, whose data is a heart) carries no
  data: a stream that ends after an ``ack`` alone backs off; ``bye`` is a normal
  end (Edge drops streams after ``edge.sse.drop-after-seconds``) and reconnects
  without a state change;
* 501 on the stream path is a poll-only Edge (``edge-rest`` ``EdgeResource.kt``):
  this connection polls instead, every ``poll_interval``;
* ``config`` with ``edge.stale`` (seconds, as the JavaScript SDK reads it) and a
  poll's HTTP 236 pause requests, state ``stale``, and resume after that time
  (236, or a value that is not a number of seconds: ``stale_retry``; at most
  ``_MAX_STALE`` seconds either way, so a bogus value cannot stop a worker for good);
* ``cache-control: max-age`` sets the poll interval on 200 and 304
  (``CacheControlResponseWrapper.kt``); a 304 is Edge's last list seen again
  (``ListeningRepository.edge_list_unchanged``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypedDict
from urllib.parse import quote

import urllib3
import urllib3.connection
from featurehub_sdk.client_context import InternalFeatureRepository
from featurehub_sdk.edge_service import EdgeService
from featurehub_sdk.version import sdk_version

from .apikey import environment_id, redact
from .listener import ListeningRepository
from .threads import launch_without_signals, wait_for_end

log = logging.getLogger("fh_prefork.edge")

__all__ = ["EdgeState", "EdgeStatus", "EdgeView", "SupervisedEdge", "Transport", "edge_provider"]

#: status()["state"]: ``key_not_found`` is Edge not knowing the API key (poll 404, or the
#: stream's ``failure`` "Unrecognized API key"); ``stale`` is Edge asking for a pause
#: (``edge.stale``, HTTP 236), after which requests resume.
EdgeState = Literal["connecting", "connected", "backoff", "key_not_found", "stale", "closed"]
#: status()["transport"]; status()["polling_fallback"] is True when "poll" was chosen because
#: the stream path answered 501 (a poll-only Edge).
Transport = Literal["sse", "poll"]
#: A worker's Edge view: its connection's state, ``standby`` (leader mode, switched off: a
#: follower) or ``none`` (no connection at all: a prefork master).
EdgeView = Literal[EdgeState, "standby", "none"]


class _EdgeStatusState(TypedDict):
    state: EdgeView


class EdgeStatus(_EdgeStatusState, total=False):
    """``SupervisedEdge.status()``; a switched-off or absent connection has ``state`` alone
    (and ``terms``, in leader mode), so every other key is optional to a reader."""

    transport: Transport
    polling_fallback: bool
    poll_interval: float | None
    connects: int
    failures: int
    events: int
    last_error: str | None
    last_event_at: float | None
    next_attempt_in: float | None
    #: leader mode (EdgeSwitch): leadership terms begun, each with a connection of its own
    terms: int

#: The text of the stream's ``failure`` for an unknown or deleted key (TimedBucketClientConnection).
_UNKNOWN_KEY = "unrecognized api key"
#: The longest pause Edge can ask for (``edge.stale`` seconds, 236): bounded, never for good.
_MAX_STALE = 3600.0

_EOL = re.compile(rb"\r\n|\r|\n")
_MAX_AGE = re.compile(r"max-age=(\d+)")
_MAX_LINE = 16 * 1024 * 1024  # a line this long without a newline is not an Edge talking
_Tracker = Callable[[Any], None]


class _KeyNotFound(Exception):
    """Edge does not know the API key: a poll's 404, or the stream's ``failure``
    "Unrecognized API key". ``answer`` is what Edge said, for the log."""

    def __init__(self, error: str, answer: str) -> None:
        super().__init__(error)
        self.answer = answer


class _EdgeFailure(Exception):
    """The stream's ``failure`` event for anything but the key (a cache error): transient."""


class _PollOnly(Exception):
    """The stream path answered 501: a poll-only Edge (edge-rest)."""


class _Stale(Exception):
    """Edge asked for a pause (``edge.stale`` seconds, HTTP 236)."""

    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(why)
        self.seconds = seconds


class _BadStatus(Exception):
    """Edge answered with an HTTP status we cannot use (5xx, 3xx...)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _StreamEmpty(Exception):
    """The stream closed before delivering data or a ``bye``: treated as a failure, so we
    back off (an ``ack`` alone is not data)."""


if TYPE_CHECKING:
    _ConnectionBase = urllib3.connection.HTTPConnection
else:
    _ConnectionBase = object


class _Tracking(_ConnectionBase):
    """Reports its socket once connected so ``close()`` can shut it down from another thread."""

    def __init__(self, *args: Any, fh_tracker: _Tracker | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fh_tracker = fh_tracker

    def connect(self) -> None:
        super().connect()
        if self._fh_tracker is not None:
            self._fh_tracker(self)


class _TrackedHTTPConnection(_Tracking, urllib3.connection.HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracking, urllib3.connection.HTTPSConnection):
    pass


def _shutdown(conn: Any) -> None:
    """Shut a connection's socket down (not close: the owning thread still holds the fd).

    ``socket.socket.shutdown`` is called unbound so an SSLSocket is cut at the TCP level,
    which wakes a thread blocked in ``recv`` immediately.
    """
    sock = getattr(conn, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class SupervisedEdge(EdgeService):  # type: ignore[misc]  # the SDK is untyped
    """One supervised Edge connection: a daemon thread that never dies until ``close()``."""

    def __init__(
        self,
        edge_url: str,
        api_keys: list[str],
        repository: InternalFeatureRepository,
        *,
        transport: str = "sse",
        poll_interval: float = 30.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        connect_timeout: float = 5.0,
        read_timeout: float | None = 90.0,
        min_attempt_interval: float = 1.0,
        stale_retry: float = 300.0,
        name: str = "fh-prefork-edge",
    ) -> None:
        if transport not in ("sse", "poll"):
            raise ValueError(f"transport must be 'sse' or 'poll', not {transport!r}")
        if not api_keys:
            raise ValueError("at least one API key is required")
        if not edge_url:
            raise ValueError("edge_url is required")
        self._edge_url = edge_url if edge_url.endswith("/") else edge_url + "/"
        self._api_keys = list(api_keys)
        self._repository = repository
        self._transport: Transport = "sse" if transport == "sse" else "poll"
        self._polling_fallback = False   # polling because the stream path answered 501
        self._configured_poll_interval = float(poll_interval)
        self._poll_interval = float(poll_interval)   # Edge's max-age overrides it per answer
        self._stale_retry = min(_MAX_STALE, max(0.0, float(stale_retry)))
        self._backoff_initial = max(0.0, float(backoff_initial))
        self._backoff_max = max(self._backoff_initial, float(backoff_max))
        self._min_attempt_interval = max(0.0, float(min_attempt_interval))
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._name = name
        self._client_evaluated = "*" in self._api_keys[0]
        # a key is checked in the master (apikey.check_shape); encoded anyway, so a key given
        # here directly can never become another path or query
        self._sse_path = urllib3.util.parse_url(
            f"{self._edge_url}features/{quote(self._api_keys[0], safe='/*')}"
        ).request_uri
        poll_url = (
            f"{self._edge_url}features?"
            + "&".join("apiKey=" + quote(key, safe="/*") for key in self._api_keys)
            + "&contextSha=0"
        )
        self._poll_path = urllib3.util.parse_url(poll_url).request_uri
        self._headers = {"X-SDK": "Python", "X-SDK-Version": str(sdk_version)}
        # status, read by other threads under the lock
        self._state: EdgeState = "connecting"
        self._connects = 0
        self._failures = 0
        self._events = 0
        self._last_error: str | None = None
        self._last_event_at: float | None = None
        self._next_attempt_at: float | None = None  # time.monotonic()
        self._closed = False
        self._logged_state: EdgeState | None = None
        self._last_event_id: str | None = None
        self._etag: str | None = None
        self._consecutive_failures = 0
        self._last_attempt_at: float | None = None  # time.monotonic()
        self._delivered = False      # this attempt brought data (or ended with a normal `bye`)
        self._last_ok_at: float | None = None   # monotonic: the last poll answered 200/304
        self._bye = False            # this stream ended with Edge's `bye`
        self._connected_now = False  # this stream brought data (Edge knows the key)
        self._init_runtime()

    def _init_runtime(self) -> None:
        """Per-process machinery: rebuilt after fork, since threads and sockets don't survive."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pool: urllib3.HTTPConnectionPool | None = None   # made on the Edge thread

    def _new_pool(self) -> urllib3.HTTPConnectionPool:
        """The connection pool, made by the Edge thread at its first request.

        For https it carries an SSLContext made there too: under gevent that
        is the patched ``ssl``'s (urllib3, imported in the master before the
        patch, would make the unpatched one, and its handshake recurses until
        RecursionError), and loading the CA store (about 70 ms) stays out of
        the post-fork hook.
        """
        parsed = urllib3.util.parse_url(self._edge_url)
        kwargs: dict[str, Any] = {
            "timeout": self._timeout,
            "retries": False,
            "maxsize": 1,
            "block": False,
            "fh_tracker": self._track,
        }
        if parsed.scheme == "https":
            https = urllib3.HTTPSConnectionPool(parsed.host or "", parsed.port,
                                                ssl_context=ssl.create_default_context(),
                                                **kwargs)
            https.ConnectionCls = _TrackedHTTPSConnection
            return https
        pool = urllib3.HTTPConnectionPool(parsed.host or "", parsed.port, **kwargs)
        pool.ConnectionCls = _TrackedHTTPConnection
        return pool

    # -- SDK EdgeService interface -------------------------------------------------------------
    async def poll(self) -> None:
        """SDK entry point (``FeatureHubConfig.init()``): start the thread, never block."""
        self.start()

    def start(self) -> None:
        """Start the background thread once; safe to call repeatedly and after fork."""
        if self._pid != os.getpid():
            # forked after start(): the parent's thread and sockets do not exist here
            self._init_runtime()
        with self._lock:
            if self._closed or self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            launch_without_signals(self._thread, failed=self._thread_failed)

    def _thread_failed(self) -> None:
        """The thread could not start (see threads.launch_without_signals): say so in
        ``status()``, and let a later ``start()`` try again."""
        with self._lock:
            self._thread = None
            self._last_error = "the Edge thread could not start"

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread promptly: a blocked SSE read is interrupted by a socket shutdown."""
        if self._pid != os.getpid():
            self._init_runtime()
        with self._lock:
            already = self._closed
            self._closed = True
            self._stop.set()
            conns = list(self._conns)
            thread = self._thread
        for conn in conns:
            _shutdown(conn)
        if not wait_for_end(thread, timeout):
            log.warning("fh_prefork: Edge thread %s did not stop within %.1fs", self._name,
                        timeout)
        if not already:
            self._set_state("closed", logging.DEBUG, "fh_prefork: Edge connection closed")
            if self._pool is not None:
                self._pool.close()

    def client_evaluated(self) -> bool:
        return self._client_evaluated

    async def context_change(self, header: str) -> None:
        """No-op: only client-evaluated keys are supported, the context never goes to Edge."""
        return None

    # -- introspection -------------------------------------------------------------------------
    @property
    def state(self) -> EdgeState:
        return self._state

    def live(self) -> bool:
        """Whether Edge's view is current: what Edge has not sent can be taken as absent.

        An SSE stream connected (Edge pushes every change down it within
        milliseconds), or in poll mode the last poll answered 200 or 304 within
        twice the poll interval (Edge's ``max-age`` included).
        """
        with self._lock:
            if self._state != "connected":
                return False
            if self._transport == "sse":
                return True
            return (self._last_ok_at is not None
                    and time.monotonic() - self._last_ok_at <= 2.0 * self._poll_interval)

    def status(self) -> EdgeStatus:
        """Snapshot for health endpoints and tests."""
        with self._lock:
            next_in: float | None = None
            if self._next_attempt_at is not None and self._state != "closed":
                next_in = max(0.0, self._next_attempt_at - time.monotonic())
            return {
                "transport": self._transport,
                "polling_fallback": self._polling_fallback,
                "poll_interval": self._poll_interval if self._transport == "poll" else None,
                "state": self._state,
                "connects": self._connects,
                "failures": self._failures,
                "events": self._events,
                "last_error": self._last_error,
                "last_event_at": self._last_event_at,
                "next_attempt_in": next_in,
            }

    # -- internals -----------------------------------------------------------------------------
    def _track(self, conn: Any) -> None:
        with self._lock:
            self._conns.add(conn)
            stopping = self._stop.is_set()
        if stopping:  # close() raced with connect(): cut it now
            _shutdown(conn)

    def _set_state(self, state: EdgeState, level: int, msg: str, *args: Any) -> None:
        """Record a state; log at ``level`` only when it differs from the last logged state."""
        with self._lock:
            if self._state == "closed" and state != "closed":
                return
            self._state = state
            changed = state != self._logged_state
            if changed and level > logging.DEBUG:
                self._logged_state = state
        log.log(level if changed else logging.DEBUG, msg, *args)

    def _backoff(self, k: int) -> float:
        """Capped, jittered exponential: uniform(d/2, d), d = min(max, initial * 2**k)."""
        d = min(self._backoff_max, self._backoff_initial * (2.0 ** min(k, 32)))
        return random.uniform(d / 2.0, d)

    def _wait_for_next_attempt(self, delay: float) -> bool:
        """Wait ``delay`` but never start two attempts closer than the floor. False if closed."""
        now = time.monotonic()
        at = now + delay
        if self._last_attempt_at is not None:
            at = max(at, self._last_attempt_at + self._min_attempt_interval)
        with self._lock:
            self._next_attempt_at = at
        remaining = at - now
        if remaining > 0 and self._stop.wait(remaining):
            return False
        with self._lock:
            self._next_attempt_at = None
        return not self._stop.is_set()

    def _run(self) -> None:
        delay = 0.0
        while self._wait_for_next_attempt(delay):
            self._last_attempt_at = time.monotonic()
            self._delivered = False
            try:
                if self._transport == "sse":
                    self._stream_once()
                    if not self._delivered:
                        raise _StreamEmpty("stream closed before delivering any data")
                    delay = 0.0  # a normal end of stream (e.g. after `bye`): the floor paces us
                    self._set_state("connecting", logging.DEBUG, "fh_prefork: Edge stream "
                                    "ended, reconnecting")
                else:
                    self._poll_once()
                    delay = self._poll_interval
                self._consecutive_failures = 0
            except _KeyNotFound as exc:
                if self._stop.is_set():
                    break
                delay = self._failed(str(exc))
                self._set_state(
                    "key_not_found",
                    logging.ERROR,
                    "fh_prefork: Edge answered %s for API key %s (%s): the key does not "
                    "exist or was deleted; retrying with backoff up to %.0fs (Edge %s)",
                    exc.answer, self._keys_for_log(), self._environments(),
                    self._backoff_max, self._edge_url,
                )
            except _PollOnly:
                if self._stop.is_set():
                    break
                self._switch_to_polling()
                delay = 0.0
            except _Stale as exc:
                if self._stop.is_set():
                    break
                self._consecutive_failures = 0
                delay = exc.seconds
                self._set_state("stale", logging.WARNING, "fh_prefork: Edge %s says the "
                                "environment is stale (%s); no requests for %.0fs, then resuming",
                                self._edge_url, exc, delay)
            except Exception as exc:
                if self._stop.is_set():
                    break
                error = f"{type(exc).__name__}: {exc}"
                delay = self._failed(error)
                self._set_state(
                    "backoff",
                    logging.WARNING,
                    "fh_prefork: Edge %s failed (%s); retrying with backoff (next in %.1fs)",
                    self._edge_url,
                    error,
                    delay,
                )
        with self._lock:
            self._next_attempt_at = None

    def _failed(self, error: str) -> float:
        """Count a failed attempt; the delay before the next one (exponential, capped)."""
        if self._delivered:   # data arrived before the failure: the streak starts again
            self._consecutive_failures = 0
        self._consecutive_failures += 1
        with self._lock:
            self._failures += 1
            self._last_error = error
        return self._backoff(self._consecutive_failures)

    def _keys_for_log(self) -> str:
        return ", ".join(redact(key) for key in self._api_keys)

    def _environments(self) -> str:
        """"environment X" for the keys, never their secret (a key of another shape: unnamed)."""
        names = []
        for key in self._api_keys:
            try:
                names.append(environment_id(key))
            except ValueError:
                names.append("?")
        return ("environment " if len(names) == 1 else "environments ") + ", ".join(names)

    def _switch_to_polling(self) -> None:
        with self._lock:
            self._transport = "poll"
            self._polling_fallback = True
            self._poll_interval = self._configured_poll_interval
        log.warning("fh_prefork: Edge %s answers 501 on its streaming path (a poll-only Edge, "
                    "edge-rest): this worker polls it every %.0fs instead (set "
                    "FH_PREFORK_EDGE=poll to choose this from the start)",
                    self._edge_url, self._configured_poll_interval)

    def _record_connect(self) -> None:
        with self._lock:
            self._connects += 1
        if self._consecutive_failures:
            self._set_state("connected", logging.INFO, "fh_prefork: Edge %s reachable again after "
                            "%d failed attempts (%s)", self._edge_url,
                            self._consecutive_failures, self._transport)
        else:
            self._set_state("connected", logging.INFO, "fh_prefork: Edge %s connected (%s)",
                            self._edge_url, self._transport)

    def _request(self, path: str, headers: dict[str, str], preload: bool) -> Any:
        if self._stop.is_set():
            raise RuntimeError("closed")
        if self._pool is None:
            self._pool = self._new_pool()
        return self._pool.urlopen(
            "GET",
            path,
            headers=headers,
            retries=False,
            redirect=False,
            timeout=self._timeout,
            preload_content=preload,
            release_conn=preload,
        )

    # -- SSE -----------------------------------------------------------------------------------
    def _stream_once(self) -> None:
        headers = dict(self._headers)
        headers["Accept"] = "text/event-stream"
        if self._last_event_id is not None:
            headers["Last-Event-Id"] = self._last_event_id
        self._bye = False
        self._connected_now = False
        resp = self._request(self._sse_path, headers, preload=False)
        try:
            if resp.status == 404:
                raise _KeyNotFound("HTTP 404: API key not found", "404")
            if resp.status == 501:
                raise _PollOnly()
            if resp.status != 200:
                raise _BadStatus(int(resp.status))
            for name, data in self._events_of(resp):
                self._handle_event(name, data)
                if self._stop.is_set():
                    break
        finally:
            try:
                resp.close()
                resp.release_conn()
            except Exception:
                log.debug("error releasing the Edge response", exc_info=True)
        if self._bye:
            self._delivered = True   # a normal end: reconnect, no backoff, no state change

    def _events_of(self, resp: Any) -> Iterator[tuple[str, str]]:
        """Minimal SSE parser over ``read1`` so events are seen as soon as they arrive."""
        buf = b""
        event = ""
        data: list[str] = []
        while not self._stop.is_set():
            chunk = resp.read1(65536)
            if not chunk:
                return
            buf += chunk
            while True:
                m = _EOL.search(buf)
                if m is None:
                    if len(buf) > _MAX_LINE:
                        raise ValueError("SSE line too long")
                    break
                if m.group() == b"\r" and m.end() == len(buf):
                    break  # may be the first half of a \r\n split across reads
                line = buf[: m.start()].decode("utf-8", errors="replace")
                buf = buf[m.end():]
                if not line:
                    if data:
                        yield event or "message", "\n".join(data)
                    event, data = "", []
                    continue
                if line.startswith(":"):
                    continue  # comment / keepalive
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id" and "\0" not in value:
                    self._last_event_id = value

    def _handle_event(self, name: str, data: str) -> None:
        with self._lock:
            self._events += 1
            self._last_event_at = time.time()
        log.debug("fh_prefork: Edge event %s: %.200s", name, data)
        if name in ("features", "feature", "delete_feature"):
            payload = self._parse(name, data, list if name == "features" else dict)
            if payload is not None:
                if not self._connected_now:   # Edge knows the key: this stream is connected
                    self._connected_now = True
                    self._record_connect()
                self._repository.notify(name, payload)
                self._delivered = True
        elif name == "config":
            config = self._parse(name, data, dict)
            if config is not None:
                seconds = self._stale_seconds(config.get("edge.stale"))
                if seconds is not None:
                    raise _Stale(seconds, f"edge.stale={config.get('edge.stale')!r}")
        elif name == "failure":
            status = self._failure_status(data)
            if _UNKNOWN_KEY in status.lower():
                raise _KeyNotFound(f"failure {status!r}: API key not found", repr(status))
            raise _EdgeFailure(f"Edge sent failure {status!r}")
        elif name == "bye":
            self._bye = True   # Edge drops every stream after a while; the next one resumes
        elif name == "ack":
            pass  # the stream's `discover`, or a heartbeat: no data
        else:
            log.debug("fh_prefork: ignoring unknown Edge event %r", name)

    def _stale_seconds(self, value: Any) -> float | None:
        """Seconds to pause for ``edge.stale`` (None: not stale), at most ``_MAX_STALE``.

        The JavaScript SDK reads the value as seconds; a value that is no number of
        seconds (``true``, text) pauses ``stale_retry``; 0, false and null are not stale.
        """
        if value is None or value is False:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return self._stale_retry
        try:
            seconds = float(value)
        except ValueError:
            return self._stale_retry
        if seconds == 0:
            return None
        if not math.isfinite(seconds) or seconds < 0:
            return self._stale_retry
        return min(seconds, _MAX_STALE)

    @staticmethod
    def _failure_status(data: str) -> str:
        """The ``status`` of a ``failure`` event (``{"status": "..."}``), or its raw text."""
        try:
            payload = json.loads(data)
        except ValueError:
            return data[:200]
        if isinstance(payload, dict) and isinstance(payload.get("status"), str):
            return str(payload["status"])[:200]
        return data[:200]

    def _parse(self, name: str, data: str, expected: type) -> Any:
        """Parse event JSON; malformed payloads are logged and skipped, never fatal."""
        try:
            payload = json.loads(data)
        except ValueError as exc:
            log.warning("fh_prefork: ignoring Edge %r event with malformed JSON (%s): %.200s",
                        name, exc, data)
            return None
        if not isinstance(payload, expected):
            log.warning("fh_prefork: ignoring Edge %r event: expected a JSON %s, got %.200s",
                        name, "array" if expected is list else "object", data)
            return None
        return payload

    # -- polling -------------------------------------------------------------------------------
    def _poll_once(self) -> None:
        headers = dict(self._headers)
        if self._etag is not None:
            headers["if-none-match"] = self._etag
        resp = self._request(self._poll_path, headers, preload=True)
        status = int(resp.status)
        if status == 404:
            raise _KeyNotFound("HTTP 404: API key not found", "404")
        if status not in (200, 236, 304):
            raise _BadStatus(status)
        self._take_max_age(resp.headers.get("cache-control"))
        if status == 304:
            # Edge's full list is the one it sent last: seen again, now
            self._record_connect()
            if isinstance(self._repository, ListeningRepository):
                self._repository.edge_list_unchanged()
            self._poll_answered()
            return
        environments = json.loads(resp.data.decode("utf-8"))
        if not isinstance(environments, list):
            raise ValueError("polling answer is not a JSON array")
        etag = resp.headers.get("etag")
        if status == 200:
            self._record_connect()
        for environment in environments:
            if isinstance(environment, dict) and isinstance(environment.get("features"), list):
                self._repository.notify("features", environment["features"])
                with self._lock:
                    self._events += 1
                    self._last_event_at = time.time()
        # only remember the ETag once the data is applied, so a failed notify is fetched again
        self._etag = etag
        self._poll_answered()
        if status == 236:
            raise _Stale(self._stale_retry, "HTTP 236")

    def _poll_answered(self) -> None:
        self._delivered = True
        with self._lock:
            self._last_ok_at = time.monotonic()

    def _take_max_age(self, cache_control: str | None) -> None:
        """Edge's ``max-age`` (on 200 and 304) is the poll interval; without it, the configured."""
        match = _MAX_AGE.search(cache_control or "")
        seconds = int(match.group(1)) if match else 0
        with self._lock:
            self._poll_interval = float(seconds) if seconds > 0 else self._configured_poll_interval


def edge_provider(**kwargs: Any) -> Callable[[Any, list[str], str], SupervisedEdge]:
    """Provider for ``FeatureHubConfig(edge_provider=...)`` / ``config.edge_service_provider``."""

    def provide(repository: Any, api_keys: list[str], edge_url: str) -> SupervisedEdge:
        return SupervisedEdge(edge_url, api_keys, repository, **kwargs)

    return provide
