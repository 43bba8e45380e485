"""A TCP proxy on loopback that can slow down or swallow traffic (a sick memcached)."""

from __future__ import annotations

import selectors
import socket
import threading
import time

from .procs import free_port


class FaultyProxy:
    """Forwards 127.0.0.1:port to ``target``; ``delay`` seconds per chunk; ``blackhole`` swallows.

    In blackhole mode connections are accepted and requests read, but nothing
    ever answers: the worst kind of memcached, one that is "up".
    """

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self.blackhole = False
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultyProxy:
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.close()
        for s in list(self._sockets):
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            self._sockets.append(client)
            self._spawn(self._pipe, client)

    def _pipe(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        sel = selectors.DefaultSelector()
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            self._sockets.append(upstream)
            sel.register(client, selectors.EVENT_READ, upstream)
            sel.register(upstream, selectors.EVENT_READ, client)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    if self.blackhole:
                        continue  # swallow: the client waits for an answer that never comes
                    if self.delay:
                        time.sleep(self.delay)  # the fault being simulated: a slow server
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
