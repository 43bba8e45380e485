"""A supervised FeatureHub Edge connection (SSE or polling).

The SDK's own clients are not fit for long-lived server processes: the streaming thread dies
for good on the first connection error, reconnects in a tight loop when a stream closes,
crashes on a ``config`` event without ``edge.stale``, and the polling timer chain dies on any
exception. ``SupervisedEdge`` speaks the same protocol but keeps one daemon thread alive until
``close()``, with capped, jittered exponential backoff and a floor between connection attempts,
so a misbehaving Edge can never turn N prefork workers into N tight reconnect loops.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import urllib3
import urllib3.connection
from featurehub_sdk.client_context import InternalFeatureRepository
from featurehub_sdk.edge_service import EdgeService
from featurehub_sdk.version import sdk_version

from .apikey import redact

log = logging.getLogger("fh_prefork.edge")

__all__ = ["SupervisedEdge", "edge_provider"]

# status()["state"] is one of: connecting, connected, backoff, key_not_found, stale, closed

_EOL = re.compile(rb"\r\n|\r|\n")
_MAX_AGE = re.compile(r"max-age=(\d+)")
_MAX_LINE = 16 * 1024 * 1024  # a line this long without a newline is not an Edge talking
_Tracker = Callable[[Any], None]


class _KeyNotFound(Exception):
    """Edge answered 404: the API key does not exist (or was deleted)."""


class _BadStatus(Exception):
    """Edge answered with an HTTP status we cannot use (5xx, 3xx...)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _StreamEmpty(Exception):
    """The stream closed before delivering any event: treated as a failure, so we back off."""


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
        self._transport = transport
        self._poll_interval = float(poll_interval)
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
        self._state = "connecting"
        self._connects = 0
        self._failures = 0
        self._events = 0
        self._last_error: str | None = None
        self._last_event_at: float | None = None
        self._next_attempt_at: float | None = None  # time.monotonic()
        self._closed = False
        self._stale = False
        self._logged_state: str | None = None
        self._last_event_id: str | None = None
        self._etag: str | None = None
        self._consecutive_failures = 0
        self._last_attempt_at: float | None = None  # time.monotonic()
        self._delivered = False
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
            if self._closed or self._stale or self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

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
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("fh_prefork: Edge thread %s did not stop within %.1fs",
                            self._name, timeout)
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
    def state(self) -> str:
        return self._state

    def live(self) -> bool:
        """Whether what Edge has not sent can be taken as absent from Edge right now.

        True only while an SSE stream is connected: Edge pushes every change
        down it within milliseconds. A poll's view is as old as the poll, so
        in poll mode absence is judged by successive full lists instead
        (ListeningRepository.absence_seconds).
        """
        with self._lock:
            return self._transport == "sse" and self._state == "connected"

    def status(self) -> dict[str, Any]:
        """Snapshot for health endpoints and tests."""
        with self._lock:
            next_in: float | None = None
            if self._next_attempt_at is not None and self._state not in ("closed", "stale"):
                next_in = max(0.0, self._next_attempt_at - time.monotonic())
            return {
                "transport": self._transport,
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

    def _set_state(self, state: str, level: int, msg: str, *args: Any) -> None:
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
                        raise _StreamEmpty("stream closed before delivering any event")
                    delay = 0.0  # a normal end of stream (e.g. after `bye`): the floor paces us
                    if not self._stale:
                        self._set_state("connecting", logging.DEBUG, "fh_prefork: Edge stream "
                                        "ended, reconnecting")
                else:
                    self._poll_once()
                    delay = self._poll_interval
                if self._delivered:
                    self._consecutive_failures = 0
            except _KeyNotFound:
                if self._stop.is_set():
                    break
                self._record_failure("HTTP 404: API key not found")
                self._set_state(
                    "key_not_found",
                    logging.ERROR,
                    "fh_prefork: Edge answered 404 for API key %s: the key does not "
                    "exist or was deleted; retrying every ~%.0fs",
                    ", ".join(redact(key) for key in self._api_keys),
                    self._backoff_max,
                )
                delay = self._backoff(10**6)
            except Exception as exc:
                if self._stop.is_set():
                    break
                if self._delivered:
                    self._consecutive_failures = 0
                self._consecutive_failures += 1
                error = f"{type(exc).__name__}: {exc}"
                self._record_failure(error)
                delay = self._backoff(self._consecutive_failures)
                self._set_state(
                    "backoff",
                    logging.WARNING,
                    "fh_prefork: Edge %s failed (%s); retrying with backoff (next in %.1fs)",
                    self._edge_url,
                    error,
                    delay,
                )
            if self._stale:
                break
        with self._lock:
            self._next_attempt_at = None

    def _record_failure(self, error: str) -> None:
        with self._lock:
            self._failures += 1
            self._last_error = error

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
        resp = self._request(self._sse_path, headers, preload=False)
        try:
            if resp.status == 404:
                raise _KeyNotFound()
            if resp.status != 200:
                raise _BadStatus(int(resp.status))
            self._record_connect()
            for name, data in self._events_of(resp):
                self._handle_event(name, data)
                if self._stale or self._stop.is_set():
                    break
        finally:
            try:
                resp.close()
                resp.release_conn()
            except Exception:
                log.debug("error releasing the Edge response", exc_info=True)

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
                self._repository.notify(name, payload)
                self._delivered = True
        elif name == "config":
            config = self._parse(name, data, dict)
            self._delivered = True
            if config is not None and config.get("edge.stale") is not None:
                self._stale = True
                self._set_state("stale", logging.WARNING, "fh_prefork: Edge says the environment "
                                "is stale (edge.stale=%s); no longer requesting updates",
                                config.get("edge.stale"))
        elif name == "failure":
            self._delivered = True
            log.warning("fh_prefork: Edge sent a failure event: %.200s", data)
        elif name in ("ack", "bye"):
            # ack: Edge accepted the stream; bye: Edge is about to close it
            self._delivered = True
        else:
            log.debug("fh_prefork: ignoring unknown Edge event %r", name)

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
            raise _KeyNotFound()
        if status == 304:
            self._delivered = True
            self._record_connect()
            return
        if status not in (200, 236):
            raise _BadStatus(status)
        environments = json.loads(resp.data.decode("utf-8"))
        if not isinstance(environments, list):
            raise ValueError("polling answer is not a JSON array")
        etag = resp.headers.get("etag")
        cache_control = resp.headers.get("cache-control")
        if cache_control:
            match = _MAX_AGE.search(cache_control)
            if match and int(match.group(1)) > 0:
                self._poll_interval = float(match.group(1))
        self._record_connect()
        for environment in environments:
            if isinstance(environment, dict) and isinstance(environment.get("features"), list):
                self._repository.notify("features", environment["features"])
                with self._lock:
                    self._events += 1
                    self._last_event_at = time.time()
        # only remember the ETag once the data is applied, so a failed notify is fetched again
        self._etag = etag
        self._delivered = True
        if status == 236:
            self._stale = True
            self._set_state("stale", logging.WARNING, "fh_prefork: Edge says the environment is "
                            "stale (HTTP 236); no longer polling")


def edge_provider(**kwargs: Any) -> Callable[[Any, list[str], str], SupervisedEdge]:
    """Provider for ``FeatureHubConfig(edge_provider=...)`` / ``config.edge_service_provider``."""

    def provide(repository: Any, api_keys: list[str], edge_url: str) -> SupervisedEdge:
        return SupervisedEdge(edge_url, api_keys, repository, **kwargs)

    return provide
