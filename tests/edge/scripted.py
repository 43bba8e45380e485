"""A scripted HTTP server for Edge tests: answers each request with the exact bytes a script
gives (the bytes the real FeatureHub Edge sends), counts requests, then closes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

#: (path, request headers lower-cased) -> the whole response, bytes on the wire
Script = Callable[[str, dict[str, str]], bytes]

UNKNOWN_KEY_FAILURE = '{"status":"Unrecognized API key. Please stop requesting."}'


def sse(*events: tuple[str, str], event_id: str | None = None) -> bytes:
    """A 200 event stream, as Jersey's SseEventSink writes it (chunked), then its end.

    ``event_id`` is put on ``features`` events (Edge sends its cache etag there, unquoted).
    """
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = b""
    for name, data in events:
        text = f"event: {name}\n"
        if event_id is not None and name == "features":
            text += f"id: {event_id}\n"
        text += f"data: {data}\n\n"
        raw = text.encode("utf-8")
        body += b"%x\r\n%s\r\n" % (len(raw), raw)
    return head + body + b"0\r\n\r\n"


def http(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    reasons = {200: "OK", 236: "", 304: "Not Modified", 404: "Not Found",
               500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}
    lines = [f"HTTP/1.1 {status} {reasons.get(status, '')}".rstrip()]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if status != 304:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if status == 304 else body)


class ScriptedEdge:
    """Loopback server: one thread accepts, one per connection answers from the script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[float, str, dict[str, str]]] = []   # (monotonic, path, headers)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/"

    def __enter__(self) -> ScriptedEdge:
        self._acceptor.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._acceptor.join(5)
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def count(self, kind: str) -> int:
        """Requests received: ``stream`` (``/features/{key}``) or ``poll`` (``/features?``)."""
        with self._lock:
            paths = [path for _, path, _ in self.requests]
        if kind == "stream":
            return sum(1 for p in paths if p.startswith("/features/"))
        return sum(1 for p in paths if p.startswith("/features?"))

    def times(self, kind: str) -> list[float]:
        with self._lock:
            prefix = "/features/" if kind == "stream" else "/features?"
            return [at for at, path, _ in self.requests if path.startswith(prefix)]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            path = head[0].split(" ")[1] if len(head[0].split(" ")) > 1 else ""
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            with self._lock:
                self.requests.append((time.monotonic(), path, headers))
            try:
                conn.sendall(self.script(path, headers))
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(2)
                while conn.recv(4096):   # let the client close first (no RST on unread data)
                    pass
            except OSError:
                pass
