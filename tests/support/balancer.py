"""A round-robin TCP balancer on loopback: one Edge address in front of several replicas.

Production puts a load balancer in front of Edge replicas, so a worker's next
stream (every reconnect, every poll on a new connection) may reach another
replica than its last one. The history test puts this in front of two
simulator replicas to let one of them lag behind the other.
"""

from __future__ import annotations

import itertools
import selectors
import socket
import threading

from .procs import free_port


class Balancer:
    """Forwards each new connection on ``127.0.0.1:port`` to the next of ``targets`` (ports)."""

    def __init__(self, targets: list[int]) -> None:
        if not targets:
            raise ValueError("a balancer needs at least one target")
        self._next = itertools.cycle(targets)
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> Balancer:
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=2)
        self._server.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            self._spawn(self._pipe, client, next(self._next))

    def _pipe(self, client: socket.socket, port: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            client.close()      # the replica is down: the client sees a closed connection
            return
        with self._lock:
            self._sockets.update((client, upstream))
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            for sock in peers:
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ)
            open_ = True
            while open_ and not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    try:
                        data = src.recv(65536)
                        if data:
                            peers[src].setblocking(True)
                            peers[src].sendall(data)
                            peers[src].setblocking(False)
                            continue
                    except OSError:
                        pass
                    open_ = False
                    break
        with self._lock:
            self._sockets.difference_update((client, upstream))
        for sock in (client, upstream):
            try:
                sock.close()
            except OSError:
                pass
