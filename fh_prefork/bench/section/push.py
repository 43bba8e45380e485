"""Push: an update handed to the leader's store until every follower serves it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from typing import Any

from ..common import (
    Bench,
    progress,
    table,
)


def run(b: Bench) -> None:
    from ...testing import redis as redis_mod
    from ..push import PUSH_UPDATES, describe, measure

    # --quick only shows every run works (each follower is a spawned interpreter, about a
    # second of start-up each); the full run has enough updates for a p99 (push), and
    # polling states p50/p90/max with its n
    followers = 3 if b.quick else 6
    push_updates, poll_updates = (6, 3) if b.quick else (PUSH_UPDATES, 30)
    idle = 1.0 if b.quick else 20.0     # s with nothing changing: what a store costs idle
    server: Any = None
    redis_url = b.redis_url
    if redis_url is None and redis_mod.available() and importlib.util.find_spec("redis"):
        server = redis_mod.RedisServer().start()
        redis_url = server.url
    # the embedded store where a worker keeps it by default: a memory-backed folder
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    folder = tempfile.mkdtemp(prefix="fh-prefork-push-", dir=shm)
    runs: list[tuple[str, str, bool, float, int]] = [
        ("file", f"file://{folder}/push", True, 5.0, push_updates)]
    if redis_url is not None:
        runs.append(("redis", redis_url, True, 5.0, push_updates))
    runs.append(("file", f"file://{folder}/poll", False, 1.0, poll_updates))
    if redis_url is not None:
        runs.append(("redis", redis_url, False, 1.0, poll_updates))
    if b.memcache_url:
        runs.append(("memcache", b.memcache_url, False, 1.0, poll_updates))
    rows = []
    try:
        for backend, url, push, refresh, updates in runs:
            progress(f"push: {backend} {'push' if push else 'polling'}, refresh {refresh:g} s, "
                      f"{updates} updates")
            r = measure(url, backend, followers=followers, updates=updates, refresh=refresh,
                        push=push, idle=idle)
            stats = r.stats()   # n, p50, p90, p99, max; a percentile n cannot support is None
            progress(f"push: {backend} {'push' if push else 'polling'}: {describe(stats)}")
            rows.append({"backend": backend, "mode": "push" if push else "polling",
                         "refresh": refresh, "followers": followers, "updates": updates,
                         **stats, "missed": r.missed,
                         "idle_reads_per_min": round(r.idle_reads_per_min, 2),
                         "idle_ticks_per_min": round(r.idle_ticks_per_min, 2)})
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    b.results["push"] = {"rows": rows}
    b.emit(table(f"Push: update handed to the leader -> every one of {followers} followers "
                 "serves it (leader mode, one host; n = updates measured, a percentile "
                 "needs n >= 10 (p90) or 100 (p99))",
                 [("backend", "backend"), ("mode", "mode"), ("refresh s", "refresh"),
                  ("followers", "followers"), ("updates", "updates"), ("n", "n"),
                  ("p50 ms", "p50"), ("p90 ms", "p90"), ("p99 ms", "p99"), ("max ms", "max"),
                  ("missed", "missed"),
                  ("idle reads/min", "idle_reads_per_min"),
                  ("idle ticks/min", "idle_ticks_per_min")], rows))
