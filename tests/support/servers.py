"""Questions tests ask of a running cluster and Edge simulator."""

from __future__ import annotations

import psutil

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator


def versions(cluster: Cluster, key: str = "FLAG") -> dict[int, int]:
    """Worker pid -> version of ``key`` it serves (asks every worker)."""
    return {pid: flags[key]["version"] for pid, flags in cluster.flags(key).items()}


def pid_of_local_port(port: int) -> int | None:
    """The process that owns the local end of a loopback TCP connection."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


def stream_owners(edge: EdgeSimulator) -> list[int | None]:
    """Pid of the process behind each open Edge stream."""
    return [pid_of_local_port(s.peer[1]) for s in edge.streams()]


def fh_log_lines(cluster: Cluster) -> list[str]:
    """fh_prefork's warnings and errors in the server's log (WARNING and up reach stderr)."""
    return [line for line in cluster.log_text().splitlines() if "fh_prefork" in line]
