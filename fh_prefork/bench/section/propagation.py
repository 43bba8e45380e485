"""Propagation: an update on one worker's Edge stream until every gunicorn worker serves it."""

from __future__ import annotations

import random
import time
import urllib.error
from typing import Any

from ..common import (
    FLAG,
    REFRESH,
    Bench,
    percentile,
    progress,
    server_env,
    table,
    unique_prefix,
    wait_serving,
)


def _first_seen(cluster: Any, version: int, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until the last worker was first seen serving ``version``."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = cluster.get(f"/flags?key={FLAG}", timeout=2)
        except (OSError, ValueError, urllib.error.URLError):
            continue
        now = time.monotonic()
        pid = int(answer["pid"])
        if answer["flags"][FLAG]["version"] == version and pid not in seen:
            seen[pid] = now
        live = set(cluster.worker_pids())
        if live and live <= set(seen):
            return max(seen[p] for p in live) - since
    return None


def run(b: Bench) -> None:
    from ...testing.cluster import Cluster
    from ...testing.edge_simulator import EdgeSimulator, make_feature

    workers, updates = (3, 5) if b.quick else (6, 24)
    backends = b.backends()[-1:] if b.quick else b.backends()
    rows = []
    for backend, url in backends:
        progress(f"propagation: gunicorn with {workers} workers on {backend}, "
                  f"{updates} updates pushed to one stream each")
        with EdgeSimulator(keepalive_interval=1.0) as edge:
            edge.set_features([make_feature(FLAG, False, 1)])
            with Cluster("gunicorn", workers, server_env(edge.url, url, unique_prefix()),
                         log_dir=b.tmp) as cluster:
                edge.wait_for_streams(workers, 30)
                wait_serving(cluster, 1)
                times: list[float] = []
                missed = 0
                rng = random.Random(7)
                for i in range(updates):
                    version = i + 2
                    streams = edge.streams()
                    stream = streams[i % len(streams)]
                    since = time.monotonic()
                    edge.push_feature(make_feature(FLAG, version % 2 == 0, version),
                                      stream_id=stream.id)
                    took = _first_seen(cluster, version, since, timeout=15)
                    if took is None:
                        missed += 1
                    else:
                        times.append(took)
                    if (i + 1) % 6 == 0:
                        progress(f"  {i + 1}/{updates} updates")
                    time.sleep(rng.uniform(0, REFRESH))  # spread updates over the tick phase
        p50, p99 = percentile(times, 50), percentile(times, 99)
        rows.append({"backend": backend, "workers": workers, "updates": updates,
                     "refresh_seconds": REFRESH, "p50_seconds": round(p50, 3),
                     "p99_seconds": round(p99, 3), "max_seconds": round(max(times), 3),
                     "p50_over_refresh": round(p50 / REFRESH, 2),
                     "p99_over_refresh": round(p99 / REFRESH, 2), "missed": missed,
                     "samples": [round(t, 4) for t in times]})
    b.results["propagation"] = {"rows": rows}
    b.emit(table(f"Propagation: update on ONE worker's Edge stream -> every worker serves it "
                 f"(refresh {REFRESH} s)",
                 [("backend", "backend"), ("workers", "workers"), ("updates", "updates"),
                  ("p50 s", "p50_seconds"), ("p99 s", "p99_seconds"), ("max s", "max_seconds"),
                  ("p50/refresh", "p50_over_refresh"), ("p99/refresh", "p99_over_refresh"),
                  ("missed", "missed")], rows))
