"""Throwaway Redis servers on free loopback ports, started and stopped by pid.

A single node (:class:`RedisServer`) and a three-master Redis Cluster
(:class:`RedisCluster`, no replicas). Used by ``fh-prefork bench`` and by the
tests; nothing here touches a Redis it did not start. Data lives in memory
only (no RDB, no AOF) and in a private temporary folder removed at stop.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from ._server import LocalServer
from .cluster import free_port, wait_until


def available() -> bool:
    return shutil.which("redis-server") is not None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (a cluster node needs its data port and its bus port)."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


class RedisServer(LocalServer):
    """One redis-server on 127.0.0.1; ``cluster=True`` starts it as an empty cluster node."""

    program = "redis-server"
    install_hint = "apt-get install redis-server"

    def __init__(self, port: int | None = None, *, cluster: bool = False,
                 bus_port: int | None = None, password: str | None = None) -> None:
        super().__init__(port)
        self.cluster = cluster
        self.bus_port = bus_port
        self.password = password
        self._dir: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.address}"

    def prepare(self, binary: str) -> list[str]:
        self._dir = tempfile.mkdtemp(prefix="fh-redis-")
        args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", self._dir, "--daemonize", "no",
                "--protected-mode", "no", "--loglevel", "warning", "--databases", "4"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     os.path.join(self._dir, "nodes.conf"), "--cluster-node-timeout", "2000"]
            if self.bus_port:
                args += ["--cluster-port", str(self.bus_port)]
        return args

    def stop(self) -> None:
        super().stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class RedisCluster:
    """Three masters, slots split evenly, no replicas; ``url`` is the store URL form."""

    def __init__(self, masters: int = 3) -> None:
        ports = _free_ports(2 * masters)
        self.nodes = [RedisServer(ports[i], cluster=True, bus_port=ports[masters + i])
                      for i in range(masters)]

    @property
    def url(self) -> str:
        return f"redis+cluster://{self.nodes[0].address}"

    def start(self) -> RedisCluster:
        import redis  # the optional extra; only a cluster needs it here

        try:
            for node in self.nodes:
                node.start()
            clients: list[Any] = [redis.Redis(port=n.port, socket_timeout=2) for n in self.nodes]
            step = 16384 // len(self.nodes)
            for i, client in enumerate(clients):
                last = 16383 if i == len(clients) - 1 else (i + 1) * step - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
            for client in clients[1:]:
                assert self.nodes[0].bus_port is not None
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port,
                                       self.nodes[0].bus_port)

            def ready() -> bool:
                for client in clients:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if ("cluster_state:ok" not in text
                            or f"cluster_known_nodes:{len(clients)}" not in text):
                        return False
                return True

            wait_until(ready, 20, "the redis cluster to agree", interval=0.1)
            time.sleep(0.2)  # epochs settle; a MOVED right after agreement is harmless anyway
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
