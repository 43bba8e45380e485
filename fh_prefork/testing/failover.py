"""Leader mode measured on real servers: fail-over time, propagation, Edge connections.

The functions the benchmark (``python -m fh_prefork.bench.failover``) reports
with large numbers and the test suite asserts with small ones: both measure
the same way. Every process started here is stopped by pid, every wait is
bounded.
"""

from __future__ import annotations

import math
import os
import sys
import time
import urllib.error
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cluster import Cluster, wait_until
from .edge_simulator import EdgeSimulator, make_feature

API_KEY = "portfolio/env-bench/client*bench"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def server_env(edge_url: str, store: str, prefix: str, *, mode: str = "leader",
               lease: float = 2.0, refresh: float = 0.5) -> dict[str, str]:
    """What a deployment sets, for the probe app under gunicorn or uWSGI."""
    return {
        "FEATUREHUB_EDGE_URL": edge_url,
        "FEATUREHUB_API_KEY": API_KEY,
        "FH_PREFORK_STORE": store,
        "FH_PREFORK_PREFIX": prefix,
        "FH_PREFORK_EDGE_MODE": mode,
        "FH_PREFORK_LEASE_SECONDS": str(lease),
        "FH_PREFORK_REFRESH_SECONDS": str(refresh),
        "FH_PREFORK_EDGE_BACKOFF_MAX": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


def stream_owners(edge: EdgeSimulator) -> dict[int, int | None]:
    """Open stream id -> pid of the process behind it."""
    return {s.id: edge.stream_pid(s) for s in edge.streams()}


def sole_leader(edge: EdgeSimulator, pids: Callable[[], Sequence[int]]) -> int | None:
    """The pid of the one open stream's owner, if exactly one stream is open and known."""
    owners = list(stream_owners(edge).values())
    if len(owners) == 1 and owners[0] is not None and owners[0] in pids():
        return owners[0]
    return None


@dataclass
class FailoverResult:
    seconds: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.seconds, 50)

    @property
    def max(self) -> float:
        return max(self.seconds) if self.seconds else float("nan")


def measure_failover(cluster: Cluster, edge: EdgeSimulator, kills: int, *,
                     bound: float = 30.0) -> FailoverResult:
    """SIGKILL the leader ``kills`` times; time each kill until another worker's stream opens."""
    result = FailoverResult()
    for _ in range(kills):
        leader = wait_until(lambda: sole_leader(edge, cluster.worker_pids), bound,
                            "one leader stream from a worker")
        wait_until(lambda: len(cluster.worker_pids()) >= cluster.workers, bound,
                   "a full set of workers")
        result.seconds.append(_kill_and_time(cluster, edge, leader, bound))
    return result


def _kill_and_time(cluster: Cluster, edge: EdgeSimulator, leader: int, bound: float) -> float:
    before = {s.id for s in edge.streams()}
    killed_at = time.time()
    cluster.kill_worker(leader)
    new = wait_until(lambda: [s for s in edge.streams() if s.id not in before
                              and edge.stream_pid(s) not in (None, leader)],
                     bound, "a stream from a new leader", interval=0.01)
    return max(0.0, float(min(s.opened_at for s in new)) - killed_at)


@dataclass
class PropagationResult:
    seconds: list[float] = field(default_factory=list)   # one per follower per update

    @property
    def p50(self) -> float:
        return percentile(self.seconds, 50)

    @property
    def p99(self) -> float:
        return percentile(self.seconds, 99)


def measure_propagation(cluster: Cluster, edge: EdgeSimulator, updates: int, *,
                        key: str = "PROP", bound: float = 20.0) -> PropagationResult:
    """Push ``updates`` versions of ``key``; time each follower until it serves the version."""
    result = PropagationResult()
    version = int(time.time())  # above anything pushed before
    for _ in range(updates):
        version += 1
        leader = wait_until(lambda: sole_leader(edge, cluster.worker_pids), bound,
                            "one leader stream")
        pids = set(cluster.worker_pids())
        pushed_at = time.monotonic()
        edge.push_feature(make_feature(key, version % 2 == 0, version))
        seen: dict[int, float] = {}
        deadline = pushed_at + bound
        while not pids <= set(seen):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {sorted(pids - set(seen))} did not serve "
                                   f"{key} v{version} within {bound} s")
            try:
                answer = cluster.get(f"/flags?key={key}", timeout=2)
            except (OSError, ValueError, urllib.error.URLError):
                continue  # a worker restarting: the loop is bounded by the deadline
            pid = int(answer["pid"])
            if pid not in seen and answer["flags"][key]["version"] >= version:
                seen[pid] = time.monotonic() - pushed_at
        result.seconds.extend(t for pid, t in seen.items() if pid != leader)
    return result


def count_connections(start: Callable[[int], Cluster], edge: EdgeSimulator, masters: int,
                      workers: int, *, settle: float = 3.0, bound: float = 60.0
                      ) -> dict[str, Any]:
    """Start ``masters`` clusters of ``workers``; the Edge streams open once settled."""
    clusters = [start(workers) for _ in range(masters)]
    total = masters * workers
    mode_leader = clusters[0].env.get("FH_PREFORK_EDGE_MODE") == "leader"
    want = 1 if mode_leader else total
    wait_until(lambda: edge.open_streams >= want, bound, f"{want} Edge stream(s)")
    # let elections, fallbacks and reconnects settle before counting
    end = time.monotonic() + settle
    while time.monotonic() < end:
        edge.wait_until(lambda: False, min(0.2, max(0.0, end - time.monotonic())))
    return {"masters": masters, "workers": total, "open_streams": edge.open_streams,
            "max_concurrent_streams": edge.max_concurrent_streams}


def starter(env: Mapping[str, str], started: list[Cluster]) -> Callable[[int], Cluster]:
    import tempfile

    def start(n: int) -> Cluster:
        cluster = Cluster("gunicorn", n, env, log_dir=tempfile.mkdtemp(prefix="fh-bench-"))
        started.append(cluster)
        return cluster.start(timeout=60)

    return start


