"""Push latency: an update reaches one process's store, how soon every other serves it.

The leader-mode path on one host: one *leader* process receives each update (as
from its Edge stream) and writes the store; N *follower* processes never talk to
Edge and learn everything from the store, each with its own store and thread,
exactly as a gunicorn worker's. A follower's time is when its repository applied
the update (a raw-update listener: from then on its requests serve it); the
update's latency is the last follower's time minus the moment the leader was
handed the update. ``CLOCK_MONOTONIC`` is system-wide on Linux, so the
processes' clocks compare.

The refresh period is 5 s by default, so polling cannot explain a latency far
below it: with push, Redis pub/sub or inotify wake the followers; without
(``push=False``, and memcached), they wait for their next jittered tick.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import percentile

API_KEY = "push/env-push/client*push"
FLAG = "PUSH_FLAG"

#: Updates per push run: a p99 needs some hundred samples above it to be more than the
#: maximum (with 40 it *is* the maximum, and independent runs of 40 scattered 10-31 ms).
PUSH_UPDATES = 200
#: Fewest samples for which a percentile is stated: below it the quantile is one of the
#: few largest samples (p99 needs 100, p90 10), and the table shows the maximum instead.
MIN_SAMPLES = {50: 2, 90: 10, 99: 100}


def _feature(version: int) -> dict[str, Any]:
    return {"id": f"id-{FLAG}", "key": FLAG, "l": False, "version": version, "type": "BOOLEAN",
            "value": version % 2 == 0, "strategies": []}


def _open(url: str, prefix: str, refresh: float, push: bool) -> tuple[Any, Any]:
    from featurehub_sdk.featurehub_config import FeatureHubConfig

    from ..store import open_store

    config = FeatureHubConfig("http://127.0.0.1:9/", [API_KEY])
    store = open_store(url, config, {"prefix": prefix, "refresh_timeout": refresh,
                                     "push": push})
    assert store is not None
    return config, store


def _follower(index: int, url: str, prefix: str, refresh: float, push: bool, ready: Any,
              out: Any, idle: Any, stop: Any) -> None:
    from ..listener import RawUpdateFeatureListener

    config, store = _open(url, prefix, refresh, push)

    class Seen(RawUpdateFeatureListener):
        def process_updates(self, features: list[dict[str, Any]], source: str) -> None:
            now = time.monotonic()
            for f in features:
                if f.get("key") == FLAG:
                    out.put((index, int(f["version"]), now))

        def process_update(self, feature: dict[str, Any], source: str) -> None:
            self.process_updates([feature], source)

        def delete_feature(self, feature: dict[str, Any], source: str) -> None:
            pass

    config.repository().register_raw_update_listener(Seen())
    deadline = time.monotonic() + 10
    notifier = store._notifier
    while notifier is not None and not getattr(notifier, "connected", True) \
            and time.monotonic() < deadline:
        time.sleep(0.01)  # bounded: a Redis subscriber confirming its subscription
    ready.release()
    idle.wait(120)      # the updates are over: count what the store does while nothing changes
    before, started = store.counters.as_dict(), time.monotonic()
    stop.wait(120)
    after, seconds = store.counters.as_dict(), time.monotonic() - started
    out.put(("idle", index, after["reads"] - before["reads"],
             after["refreshes"] - before["refreshes"], seconds))
    store.close(flush_timeout=0)


def summary(latencies_ms: Sequence[float]) -> dict[str, Any]:
    """n, p50, p90, p99 and max of one run's latencies (ms), each percentile stated only
    when ``n`` is large enough for it to differ from the largest samples (else None)."""
    n = len(latencies_ms)
    out: dict[str, Any] = {"n": n}
    for q, fewest in MIN_SAMPLES.items():
        out[f"p{q}"] = round(percentile(latencies_ms, q), 2) if n >= fewest else None
    out["max"] = round(max(latencies_ms), 2) if n else None
    return out


def describe(stats: dict[str, Any]) -> str:
    """One line, every figure with its sample count: ``n=200 p50 3.1 ms, ... max 14.0 ms``."""
    parts = [f"n={stats['n']}"]
    for key in ("p50", "p90", "p99", "max"):
        value = stats.get(key)
        parts.append(f"{key} {value:.1f} ms" if value is not None else f"{key} (n too small)")
    return " ".join(parts[:1]) + " " + ", ".join(parts[1:])


@dataclass
class PushResult:
    backend: str
    push: bool
    followers: int
    refresh: float
    latencies: list[float] = field(default_factory=list)   # s, per update: the last follower
    missed: int = 0                                         # updates some follower never saw
    idle_reads_per_min: float = float("nan")    # full reads per follower per minute, idle
    idle_ticks_per_min: float = float("nan")    # refresh ticks (token checks) likewise

    def stats(self) -> dict[str, Any]:
        """:func:`summary` of this run's latencies, in ms."""
        return summary([x * 1000 for x in self.latencies])


def measure(url: str, backend: str, *, followers: int = 6, updates: int = PUSH_UPDATES,
            refresh: float = 5.0, push: bool = True, gap: float = 0.15,
            bound: float | None = None, idle: float = 0.0) -> PushResult:
    """Send ``updates`` updates through a leader; time until every follower applied each.

    ``idle``: then let nothing change for that long and count what each
    follower's store did meanwhile (with push on it should be the safety poll).
    """
    prefix = f"push{os.getpid()}x{time.time_ns() % 10**10}"
    bound = bound if bound is not None else 2.5 * refresh + 2
    ctx = mp.get_context("spawn")
    ready, quiet, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Event(), ctx.Queue()
    config, leader = _open(url, prefix, refresh, push)
    config.repository().notify("features", [_feature(1)])
    assert leader.flush(5), "the leader could not write the first state"
    procs = [ctx.Process(target=_follower, name=f"push-{i}", daemon=True,
                         args=(i, url, prefix, refresh, push, ready, out, quiet, stop))
             for i in range(followers)]
    result = PushResult(backend, push, followers, refresh)
    try:
        for p in procs:
            p.start()
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise RuntimeError("a follower did not start within 60 s")
        for version in range(2, updates + 2):
            time.sleep(gap * random.uniform(0.5, 1.5))  # spread updates across tick phases
            seen: dict[int, float] = {}
            sent = time.monotonic()
            config.repository().notify("feature", _feature(version))
            deadline = sent + bound
            while len(seen) < followers and time.monotonic() < deadline:
                try:
                    index, got, when = out.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if got >= version:
                    seen.setdefault(index, when)
            if len(seen) < followers:
                result.missed += 1
            else:
                result.latencies.append(max(seen.values()) - sent)
        if idle > 0:
            quiet.set()
            time.sleep(idle)    # the measured idle window itself
            stop.set()
            reads = ticks = seconds = 0.0
            for _ in procs:
                item = out.get(timeout=30)
                while item[0] != "idle":     # a late update report
                    item = out.get(timeout=30)
                reads, ticks, seconds = reads + item[2], ticks + item[3], seconds + item[4]
            result.idle_reads_per_min = 60 * reads / seconds
            result.idle_ticks_per_min = 60 * ticks / seconds
    finally:
        quiet.set()
        stop.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        leader.close(flush_timeout=0)
    return result
