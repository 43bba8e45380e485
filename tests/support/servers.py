"""Questions tests ask of a running cluster and Edge simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from fh_prefork.testing.cluster import APP, Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator


@contextmanager
def cluster_starter(base_env: Mapping[str, str | None], log_dir: Path, app: str = APP
                    ) -> Iterator[Callable[..., Cluster]]:
    """``start(kind, workers, args, env)`` starts a cluster serving ``app`` on ``base_env``
    and the call's own ``env``; every cluster started is stopped, and its processes killed
    by pid, on leaving."""
    from .fixtures import require_servers_mark  # the plugin imports this module

    require_servers_mark()
    started: list[Cluster] = []

    def start(kind: str, workers: int = 4, args: tuple[str, ...] = (),
              env: Mapping[str, str | None] | None = None) -> Cluster:
        cluster = Cluster(kind, workers, {**base_env, **(env or {})}, args=args, app=app,
                          log_dir=str(log_dir))
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.stop()


def versions(cluster: Cluster, key: str = "FLAG") -> dict[int, int]:
    """Worker pid -> version of ``key`` it serves (asks every worker)."""
    return {pid: flags[key]["version"] for pid, flags in cluster.flags(key).items()}


def all_at(cluster: Cluster, version: int, key: str = "FLAG") -> Callable[[], bool]:
    """A ``wait_for`` predicate: every worker of ``cluster`` serves ``key`` at ``version``."""
    return lambda: set(versions(cluster, key).values()) == {version}


def stream_owners(edge: EdgeSimulator) -> list[int | None]:
    """Pid of the process behind each open Edge stream."""
    return [edge.stream_pid(s) for s in edge.streams()]


def fh_log_lines(cluster: Cluster) -> list[str]:
    """fh_prefork's warnings and errors in the server's log (WARNING and up reach stderr)."""
    return [line for line in cluster.log_text().splitlines() if "fh_prefork" in line]
