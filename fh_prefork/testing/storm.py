"""The compare-and-set storm: N processes released together by a barrier, all writing.

Used by the test suite (which asserts that nothing is lost) and by
``fh-prefork bench`` (which prints how long it took and how many attempts a
write needed). Each process builds its own config and store exactly as a
worker does, so the race is the real one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from .. import features as fs
from ..apikey import environment_id
from ..store import SessionStore, open_backend, open_store
from . import faults

API_KEY = "storm/env-storm/client*storm"
SHARED_ID = "id-SHARED"


def feature(key: str, version: int, value: object = True) -> dict[str, Any]:
    return {"id": f"id-{key}", "key": key, "l": False, "version": version,
            "type": "BOOLEAN", "value": value, "strategies": []}


@dataclass
class StormResult:
    processes: int
    sent_distinct: int
    surviving_distinct: int
    shared_max_sent: int
    shared_stored: int | None
    fingerprint_ok: bool
    seconds_to_quiescence: float
    writes: int
    write_attempts: int
    cas_conflicts: int
    gave_up: int
    crashed: int = 0
    fingerprint_stale_at_end: bool = False   # before a live store repaired it (not a loss)
    per_process: list[dict[str, Any]] = field(default_factory=list)

    @property
    def attempts_per_write(self) -> float:
        return self.write_attempts / self.writes if self.writes else float("nan")

    @property
    def lost(self) -> int:
        return self.sent_distinct - self.surviving_distinct


def _open(url: str, prefix: str, refresh: float) -> tuple[Any, SessionStore]:
    config = FeatureHubConfig("http://127.0.0.1:9/", [API_KEY])
    store = open_store(url, config, {"prefix": prefix, "refresh_timeout": refresh})
    assert store is not None
    return config, store


def _writer(url: str, prefix: str, index: int, mode: str, barrier: Any, out: Any,
            fault: str | None, event: str = "features") -> None:
    config, store = _open(url, prefix, 3600.0)
    if fault:
        faults.kill_at(store, fault)
    rng = random.Random(os.getpid() ^ int(time.time_ns()))
    if mode == "same":
        update = [feature(f"SAME{i:02}", 1) for i in range(20)]
        shared_version = 0
    else:
        shared_version = rng.randint(1, 1_000_000)
        update = [feature(f"P{index:03}", 1), feature("SHARED", shared_version)]
    barrier.wait(timeout=60)
    released = time.monotonic()
    if event == "features":
        config.repository().notify("features", update)
    else:  # stream updates, one feature each: they say nothing about features not named
        for one in update:
            config.repository().notify("feature", one)
    done = store.flush(timeout=60)
    finished = time.monotonic()
    counters = store.counters.as_dict()
    store.close(flush_timeout=0)
    out.put({"index": index, "pid": os.getpid(), "released": released, "finished": finished,
             "done": done, "shared_version": shared_version, **counters})


def _fingerprint_stale(url: str, key: str) -> bool:
    if not url.startswith(("memcache", "redis")):
        return False        # the embedded store's token is the file's own stat
    backend = open_backend(url, key, timeout=5.0)
    try:
        snapshot = backend.read()
        decoded = fs.decode(snapshot.value, 10**8)
        return snapshot.change_token not in decoded.consistent_fingerprints()
    finally:
        backend.close()


def run_storm(url: str, processes: int, *, mode: str = "distinct", prefix: str | None = None,
              crash_indexes: tuple[int, ...] = (),
              crash_point: str = "before_write", event: str | None = None) -> StormResult:
    """Run one storm against the store at ``url`` and check what the store ends with.

    ``mode="distinct"``: every process writes its own feature plus one shared
    feature at a random version. ``mode="same"``: every process writes the same
    20-feature update (the "every worker got the same Edge event" case).
    ``crash_indexes`` die with SIGKILL at ``crash_point`` during their write.
    ``event``: how the update arrives, as Edge's full list (``"features"``: a
    feature it lacks was deleted) or as one ``"feature"`` event per feature. By
    default "same" sends the full list (every process gets the same one) and
    "distinct" per-feature events: a full list naming only a process's own
    feature would say every other process's feature was deleted, and a store
    that has already shown it those features (push) would rightly tombstone them.
    """
    prefix = prefix or f"storm{os.getpid()}x{time.time_ns() % 10**9}"
    event = event or ("features" if mode == "same" else "feature")
    ctx = mp.get_context("spawn")  # fresh interpreters: nothing shared but the store
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, name=f"storm-{i}", daemon=True,
                         args=(url, prefix, i, mode, barrier, out,
                               crash_point if i in crash_indexes else None, event))
             for i in range(processes)]
    for p in procs:
        p.start()
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    try:
        while len(reports) < processes - len(crash_indexes) and time.monotonic() < deadline:
            try:
                reports.append(out.get(timeout=1))
            except Exception:
                if all(not p.is_alive() for p in procs) and out.empty():
                    break
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    crashed = sum(1 for p in procs if p.exitcode and p.exitcode < 0)

    # The two keys are written one after the other, so when writers race the last fingerprint
    # set may be an earlier writer's: a stale fingerprint is repaired by the next live store's
    # first sync (that is the claim checked), here a reader store's. Then a bare backend
    # reads what is left: a store's own thread must not share the client with that read.
    key = f"{prefix}_{environment_id(API_KEY)}"
    stale_at_end = _fingerprint_stale(url, key)
    config, reader = _open(url, prefix, 3600.0)
    try:
        reader.flush(timeout=30)
    finally:
        reader.close(flush_timeout=0)
    backend = open_backend(url, key, timeout=5.0)
    try:
        snapshot = backend.read()
        held = fs.decode(snapshot.value, 10**8).features
        token = backend.change_token()
    finally:
        backend.close()
    by_id = {f["id"]: f["version"] for f in held}
    survivors = {r["index"] for r in reports}
    if mode == "same":
        sent = 20
        surviving = sum(1 for i in range(20) if f"id-SAME{i:02}" in by_id)
    else:
        sent = len(survivors)
        surviving = sum(1 for i in survivors if f"id-P{i:03}" in by_id)
    fingerprint_ok = token == fs.fingerprint(held) if url.startswith(("memcache", "redis")) else \
        token == snapshot.change_token
    released = min((r["released"] for r in reports), default=0.0)
    finished = max((r["finished"] for r in reports), default=0.0)
    return StormResult(
        processes=processes,
        sent_distinct=sent,
        surviving_distinct=surviving,
        shared_max_sent=max((r["shared_version"] for r in reports), default=0),
        shared_stored=by_id.get(SHARED_ID),
        fingerprint_ok=fingerprint_ok,
        seconds_to_quiescence=finished - released,
        writes=sum(r["writes"] for r in reports),
        write_attempts=sum(r["write_attempts"] for r in reports),
        cas_conflicts=sum(r["cas_conflicts"] for r in reports),
        gave_up=sum(1 for r in reports if not r["done"]),
        crashed=crashed,
        fingerprint_stale_at_end=stale_at_end,
        per_process=reports,
    )
