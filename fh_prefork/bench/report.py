"""``fh-prefork bench``: measure fh_prefork on real processes, print tables, write JSON.

Sections (``--only`` picks some):

* ``storm``: N processes released together, each writing its own feature plus a
  shared one (compare-and-set storm), at 4, 8 and 16 processes on memcached and
  on the file store: time to quiescence, attempts per write, lost updates.
* ``same``: N processes all writing the same 20-feature update (every worker got
  the same Edge event): data writes per update.
* ``propagation``: updates pushed to ONE worker's Edge stream of a real gunicorn;
  p50/p99 of the time until every worker serves it, against the refresh period.
* ``cold``: 500 features in the store: the store constructor (read + replay), and
  a fresh gunicorn worker's first answer serving all 500 with Edge unreachable.
* ``memory``: RSS, USS and threads per worker, fh_prefork vs the plain SDK.
* ``read``: the cost of a flag read through ``fh_prefork.context()`` vs the plain
  SDK's ``config.new_context()``, in the same process and run.
* ``edge``: Edge connections with ``FH_PREFORK_EDGE_MODE=every`` vs ``leader``.
* ``openfeature``: an OpenFeature resolution through ``fh_prefork.openfeature``
  (the SDK client, and the provider alone) vs a direct ``fh_prefork.context()`` read.
* ``push``: leader mode on one host, an update handed to the leader's store until
  every follower process serves it: with push (Redis pub/sub, inotify) at a 5 s
  refresh, so polling cannot explain it, and with polling at the leader-mode
  default 1 s for comparison (``fh_prefork/bench/push.py``).

Every process started here is stopped by pid; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import timeit
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from .sections import SECTIONS as SECTIONS  # the names the CLI and tests import from here

API_KEY = "bench/env-bench/client*bench-secret"
FLAG = "BENCH_FLAG"
REFRESH = 0.5


def _progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _fmt(value: Any) -> str:
    if value is None:       # e.g. a percentile too few samples would make the maximum
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: ``columns`` are (header, row key)."""
    cells = [[h for h, _ in columns]] + [[_fmt(r.get(k, "")) for _, k in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = [title, "-" * len(title)]
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


@dataclass
class Bench:
    quick: bool
    tmp: str
    memcache_url: str | None = None
    redis_url: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)

    def backends(self) -> list[tuple[str, str]]:
        found = [("file", f"file://{self.tmp}/store-{time.time_ns()}")]
        if self.memcache_url:
            found.insert(0, ("memcache", self.memcache_url))
        if self.redis_url:
            found.append(("redis", self.redis_url))
        return found

    def emit(self, text: str) -> None:
        self.tables.append(text)
        print(text, flush=True)


def _prefix() -> str:
    return f"bench{os.getpid()}x{time.time_ns() % 10**10}"


def _server_env(edge_url: str, store: str, prefix: str, **extra: str) -> dict[str, str]:
    return {"FEATUREHUB_EDGE_URL": edge_url, "FEATUREHUB_API_KEY": API_KEY,
            "FH_PREFORK_STORE": store, "FH_PREFORK_PREFIX": prefix,
            "FH_PREFORK_REFRESH_SECONDS": str(REFRESH), "FH_PREFORK_EDGE_BACKOFF_MAX": "2",
            **extra}


# -- storm --------------------------------------------------------------------------------------

def section_storm(b: Bench, mode: str) -> None:
    from ..testing.storm import run_storm

    sizes = (4,) if b.quick else (4, 8, 16)
    rows = []
    for backend, url in b.backends():
        for n in sizes:
            _progress(f"{'storm' if mode == 'distinct' else 'same-update storm'}: "
                      f"{n} processes on {backend}")
            r = run_storm(url, n, mode=mode)
            shared_lost = int(mode == "distinct" and r.shared_stored != r.shared_max_sent)
            rows.append({"backend": backend, "processes": n,
                         "seconds_to_quiescence": round(r.seconds_to_quiescence, 4),
                         "attempts_per_write": round(r.attempts_per_write, 3),
                         "writes": r.writes, "write_attempts": r.write_attempts,
                         "cas_conflicts": r.cas_conflicts,
                         "writes_per_update": r.writes if mode == "same" else None,
                         "lost_updates": r.lost + shared_lost, "gave_up": r.gave_up,
                         "fingerprint_ok": r.fingerprint_ok,
                         "fingerprint_stale_at_end": r.fingerprint_stale_at_end})
    if mode == "distinct":
        b.results["storm"] = {"rows": rows}
        b.emit(table("Compare-and-set storm (each process writes its own feature + a shared one)",
                     [("backend", "backend"), ("procs", "processes"),
                      ("quiescence s", "seconds_to_quiescence"),
                      ("attempts/write", "attempts_per_write"), ("writes", "writes"),
                      ("conflicts", "cas_conflicts"), ("lost", "lost_updates"),
                      ("gave up", "gave_up"), ("stale sha left", "fingerprint_stale_at_end"),
                      ("fingerprint ok", "fingerprint_ok")], rows))
    else:
        b.results["same"] = {"rows": rows}
        b.emit(table("Same-update storm (every process writes the same 20-feature update)",
                     [("backend", "backend"), ("procs", "processes"),
                      ("data writes/update", "writes_per_update"),
                      ("write attempts", "write_attempts"), ("conflicts", "cas_conflicts"),
                      ("quiescence s", "seconds_to_quiescence"), ("lost", "lost_updates")],
                     rows))


# -- propagation --------------------------------------------------------------------------------

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


def _wait_serving(cluster: Any, version: int, timeout: float = 60) -> None:
    from ..testing.cluster import wait_until

    wait_until(lambda: all(f[FLAG]["version"] == version
                           for f in cluster.flags(FLAG, timeout=timeout).values()),
               timeout, f"every worker to serve {FLAG} v{version}", interval=0.1)


def section_propagation(b: Bench) -> None:
    from ..testing.cluster import Cluster
    from ..testing.edge_simulator import EdgeSimulator, make_feature

    workers, updates = (3, 5) if b.quick else (6, 24)
    backends = b.backends()[-1:] if b.quick else b.backends()
    rows = []
    for backend, url in backends:
        _progress(f"propagation: gunicorn with {workers} workers on {backend}, "
                  f"{updates} updates pushed to one stream each")
        with EdgeSimulator(keepalive_interval=1.0) as edge:
            edge.set_features([make_feature(FLAG, False, 1)])
            with Cluster("gunicorn", workers, _server_env(edge.url, url, _prefix()),
                         log_dir=b.tmp) as cluster:
                edge.wait_for_streams(workers, 30)
                _wait_serving(cluster, 1)
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
                        _progress(f"  {i + 1}/{updates} updates")
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


# -- cold start ---------------------------------------------------------------------------------

def _fill(url: str, prefix: str, n: int) -> None:
    from featurehub_sdk.featurehub_config import FeatureHubConfig

    from ..store import open_store
    from ..testing.edge_simulator import make_feature

    config = FeatureHubConfig("http://127.0.0.1:9/", [API_KEY])
    store = open_store(url, config, {"prefix": prefix, "refresh_timeout": 3600.0})
    assert store is not None
    try:
        config.repository().notify("features", [make_feature(f"F{i:03}", i % 2 == 0, 1)
                                                for i in range(n)])
        if not store.flush(timeout=30):
            raise RuntimeError(f"could not write {n} features to {url}")
    finally:
        store.close(flush_timeout=0)


#: What the memcached row of ``--quick``'s cold start says instead of a figure.
QUICK_SKIPS_WORKER_START = "not measured in --quick (the file row has it)"


def section_cold(b: Bench) -> None:
    from featurehub_sdk.featurehub_config import FeatureHubConfig

    from ..store import open_store
    from ..testing.cluster import Cluster, free_port, wait_until

    n_features = 500
    repeats, restarts = (3, 1) if b.quick else (20, 5)
    rows = []
    for backend, url in b.backends():
        prefix = _prefix()
        _fill(url, prefix, n_features)
        _progress(f"cold start: store constructor with {n_features} features on {backend}")
        took: list[float] = []
        for _ in range(repeats):
            config = FeatureHubConfig("http://127.0.0.1:9/", [API_KEY])
            started = time.perf_counter()
            store = open_store(url, config, {"prefix": prefix, "refresh_timeout": 3600.0})
            elapsed = time.perf_counter() - started
            assert store is not None
            held = sum(1 for h in config.repository().features.values() if h.exists)
            store.close(flush_timeout=0)
            if held != n_features:
                raise RuntimeError(f"constructor replayed {held} of {n_features} features")
            took.append(elapsed)
        row: dict[str, Any] = {"backend": backend, "features": n_features,
                               "constructor_ms_median": round(statistics.median(took) * 1000, 2),
                               "constructor_ms_max": round(max(took) * 1000, 2)}
        if b.quick and backend == "memcache":
            # a table cell that says why, not "None": the JSON keeps the figure empty
            row["worker_first_answer_ms_median"] = None
            row["worker_first_answer_shown"] = QUICK_SKIPS_WORKER_START
            rows.append(row)
            continue
        _progress(f"cold start: fresh gunicorn worker serving {n_features} features from "
                  f"{backend}, Edge unreachable ({restarts} restarts)")
        dead_edge = f"http://127.0.0.1:{free_port()}/"
        firsts: list[float] = []
        with Cluster("gunicorn", 1, _server_env(dead_edge, url, prefix),
                     log_dir=b.tmp) as cluster:
            for _ in range(restarts):
                old = cluster.worker_pids()[0]
                cluster.kill_worker(old)
                def replaced(old: int = old) -> list[int]:
                    return [p for p in cluster.worker_pids() if p != old]

                new = wait_until(replaced, 30, "gunicorn to fork a new worker",
                                 interval=0.005)[0]
                born = psutil.Process(new).create_time()

                def serving(new: int = new) -> float | None:
                    try:
                        answer = cluster.get("/status", timeout=2)
                    except (OSError, ValueError, urllib.error.URLError):
                        return None
                    if answer.get("pid") == new and answer.get("features") == n_features:
                        return time.time()
                    return None

                firsts.append(wait_until(serving, 30, "the new worker to serve the store",
                                         interval=0.005) - born)
        row["worker_first_answer_ms_median"] = round(statistics.median(firsts) * 1000, 1)
        row["worker_first_answer_ms_max"] = round(max(firsts) * 1000, 1)
        row["worker_first_answer_shown"] = row["worker_first_answer_ms_median"]
        rows.append(row)
    b.results["cold"] = {"rows": rows}
    b.emit(table(f"Cold start with {n_features} features in the store",
                 [("backend", "backend"), ("constructor ms (median)", "constructor_ms_median"),
                  ("constructor ms (max)", "constructor_ms_max"),
                  ("worker fork -> first answer ms (median)", "worker_first_answer_shown")],
                 rows))


# -- memory and threads -------------------------------------------------------------------------

def section_memory(b: Bench) -> None:
    from ..testing.cluster import Cluster
    from ..testing.edge_simulator import EdgeSimulator, make_feature

    class PlainCluster(Cluster):
        def command(self) -> list[str]:
            cmd = super().command()
            cmd[cmd.index("python:fh_prefork.testing.gunicorn_conf")] = \
                "python:fh_prefork.bench.plain_gunicorn_conf"
            return cmd

    workers = 2 if b.quick else 4
    backend, url = b.backends()[0]
    rows = []
    for label, kind in ((f"fh_prefork ({backend} store)", Cluster),
                        ("plain SDK", PlainCluster)):
        _progress(f"memory: {label}, {workers} workers")
        with EdgeSimulator(keepalive_interval=1.0) as edge:
            edge.set_features([make_feature(FLAG, True, 1)] +
                              [make_feature(f"F{i:02}", i % 2 == 0, 1) for i in range(49)])
            app = "fh_prefork.bench.plain_app:application" if kind is PlainCluster else \
                "fh_prefork.testing.probe_app:application"
            with kind("gunicorn", workers, _server_env(edge.url, url, _prefix()), app=app,
                      log_dir=b.tmp) as cluster:
                edge.wait_for_streams(workers, 30)
                _wait_serving(cluster, 1)
                cluster.flags(FLAG)  # every worker has served a request
                rss, uss, threads = [], [], []
                for pid in cluster.worker_pids():
                    proc = psutil.Process(pid)
                    info = proc.memory_full_info()
                    rss.append(info.rss)
                    uss.append(info.uss)
                    threads.append(proc.num_threads())
        rows.append({"variant": label, "workers": workers,
                     "rss_mib": round(statistics.mean(rss) / 2**20, 1),
                     "uss_mib": round(statistics.mean(uss) / 2**20, 1),
                     "threads": round(statistics.mean(threads), 1)})
    b.results["memory"] = {"rows": rows}
    b.emit(table("Per-worker memory and threads (gunicorn sync workers, 50 features, psutil)",
                 [("variant", "variant"), ("workers", "workers"), ("RSS MiB", "rss_mib"),
                  ("USS MiB", "uss_mib"), ("threads", "threads")], rows))


# -- flag read cost -----------------------------------------------------------------------------

def section_read(b: Bench) -> None:
    from featurehub_sdk.featurehub_config import FeatureHubConfig

    import fh_prefork

    from ..testing.cluster import wait_until
    from ..testing.edge_simulator import EdgeSimulator, make_feature

    # many short samples: the best of them is what the read costs, not what a noisy VM did
    number, repeat = (2000, 3) if b.quick else (20000, 25)
    _progress(f"flag read cost: {repeat} x {number} reads each, interleaved")
    with EdgeSimulator(keepalive_interval=1.0) as edge:
        edge.set_features([make_feature("X", True, 1)] +
                          [make_feature(f"F{i:02}", i % 2 == 0, 1) for i in range(49)])
        fh_prefork.configure(edge_url=edge.url, api_key=API_KEY,
                             store=f"file://{b.tmp}/read-store", refresh_seconds=60)
        fh_prefork.start_worker()
        plain = FeatureHubConfig(edge.url, [API_KEY])
        try:
            asyncio.run(plain.init())
            wait_until(lambda: fh_prefork.context().feature("X").exists, 30,
                       "fh_prefork to receive X")
            wait_until(lambda: plain.new_context().feature("X").exists, 30,
                       "the plain SDK to receive X")

            def ours() -> bool:
                return bool(fh_prefork.context().feature("X").is_enabled)

            def theirs() -> bool:
                return bool(plain.new_context().feature("X").is_enabled)

            assert ours() and theirs()
            best: dict[str, float] = {"fh_prefork": math.inf, "plain": math.inf}
            fns: dict[str, Callable[[], bool]] = {"fh_prefork": ours, "plain": theirs}
            for _ in range(repeat):
                for name, fn in fns.items():
                    best[name] = min(best[name], timeit.timeit(fn, number=number) / number)
        finally:
            _close_quietly(plain)
            fh_prefork.stop_worker()
    ratio = best["fh_prefork"] / best["plain"]
    rows = [{"read": "fh_prefork.context().feature('X').is_enabled",
             "ns": round(best["fh_prefork"] * 1e9)},
            {"read": "config.new_context().feature('X').is_enabled (plain SDK)",
             "ns": round(best["plain"] * 1e9)}]
    b.results["read"] = {"rows": rows, "ratio": round(ratio, 3), "number": number,
                         "repeat": repeat}
    b.emit(table(f"Flag read cost (best of {repeat} x {number}, same process and run): "
                 f"ratio {ratio:.2f}x", [("read", "read"), ("ns per read", "ns")], rows))


def _close_quietly(plain: Any) -> None:
    """Close the plain SDK's client; its streaming thread dies with a traceback on close."""
    import threading

    previous = threading.excepthook

    def hook(args: Any) -> None:
        if args.thread is None or args.thread.name != "streaming-featurehub":
            previous(args)

    threading.excepthook = hook
    try:
        plain.close()
        for thread in threading.enumerate():
            if thread.name == "streaming-featurehub":
                thread.join(timeout=2)
    finally:
        threading.excepthook = previous


# -- Edge connections ---------------------------------------------------------------------------

def section_edge(b: Bench) -> None:
    from ..testing.cluster import Cluster
    from ..testing.edge_simulator import EdgeSimulator, make_feature

    workers = 3 if b.quick else 8
    backend, url = b.backends()[0]
    rows = []
    for mode in ("every", "leader"):
        _progress(f"Edge connections: {workers} workers, FH_PREFORK_EDGE_MODE={mode}")
        row: dict[str, Any] = {"mode": mode, "workers": workers}
        try:
            with EdgeSimulator(keepalive_interval=1.0) as edge:
                edge.set_features([make_feature(FLAG, False, 1)])
                env = _server_env(edge.url, url, _prefix(), FH_PREFORK_EDGE_MODE=mode)
                with Cluster("gunicorn", workers, env, log_dir=b.tmp) as cluster:
                    _wait_serving(cluster, 1, timeout=30)
                    want = workers if mode == "every" else 1
                    def settled_at(want: int = want) -> bool:
                        return len(edge.streams()) == want

                    settled = edge.wait_until(settled_at, timeout=10 if mode == "leader" else 30)
                    streams = edge.open_streams
                    edge.push_feature(make_feature(FLAG, True, 2))
                    _wait_serving(cluster, 2, timeout=30)
                    row.update(open_streams=streams,
                               max_concurrent=edge.max_concurrent_streams,
                               stream_requests=edge.total_stream_requests,
                               poll_requests=edge.total_poll_requests)
                    if mode == "leader" and not settled:
                        row["note"] = (f"n/a (leader mode unavailable: {streams} streams for "
                                       f"{workers} workers)")
        except (RuntimeError, TimeoutError, OSError) as err:
            if mode == "every":
                raise
            row["note"] = f"n/a (leader mode unavailable: {type(err).__name__}: {err})"[:200]
        if mode == "leader" and "note" in row:
            row["open_streams"] = "n/a (leader mode unavailable)"
        rows.append(row)
    b.results["edge"] = {"rows": rows}
    b.emit(table("Edge connections (open SSE streams once settled)",
                 [("mode", "mode"), ("workers", "workers"), ("open streams", "open_streams"),
                  ("max concurrent", "max_concurrent"), ("stream requests", "stream_requests")],
                 rows))
    for row in rows:
        if "note" in row:
            print(f"  leader: {row['note']}\n", flush=True)


# -- OpenFeature resolution cost ----------------------------------------------------------------

def section_openfeature(b: Bench) -> None:
    """OpenFeature client and provider vs a direct read, same process, interleaved.

    openfeature-sdk is an optional extra: without it the section says so and passes.
    """
    try:
        from openfeature import api
        from openfeature.evaluation_context import EvaluationContext

        from ..openfeature import FeatureHubProvider
    except ImportError:
        note = "n/a: openfeature-sdk is not installed (pip install 'fh-prefork[openfeature]')"
        b.results["openfeature"] = {"rows": [], "note": note}
        b.emit(f"OpenFeature resolution cost\n---------------------------\n{note}\n")
        return
    import fh_prefork

    from ..testing.cluster import wait_until
    from ..testing.edge_simulator import EdgeSimulator, make_feature

    number, repeat = (2000, 3) if b.quick else (50000, 7)
    _progress(f"OpenFeature resolution cost: {repeat} x {number} resolutions each, interleaved")
    targeted = make_feature("T", "plain", 1, "STRING")
    targeted["strategies"] = [{"id": "s1", "name": "kiwis", "value": "kiwi", "attributes": [
        {"conditional": "EQUALS", "fieldName": "country", "type": "STRING",
         "values": ["new_zealand"]}]}]
    # four strategies sharing one value, the third matching: naming the strategy applied
    # must not cost a matcher run per strategy
    shared = make_feature("M", "plain", 1, "STRING")
    shared["strategies"] = [{"id": f"m{i}", "name": f"m{i}", "value": "kiwi", "attributes": [
        {"conditional": "EQUALS", "fieldName": "country", "type": "STRING", "values": [c]}]}
        for i, c in enumerate(["australia", "united_kingdom", "new_zealand", "ireland"])]
    with EdgeSimulator(keepalive_interval=1.0) as edge:
        edge.set_features([make_feature("X", True, 1), targeted, shared] +
                          [make_feature(f"F{i:02}", i % 2 == 0, 1) for i in range(48)])
        fh_prefork.configure(edge_url=edge.url, api_key=API_KEY,
                             store=f"file://{b.tmp}/openfeature-store", refresh_seconds=60)
        fh_prefork.start_worker()
        try:
            wait_until(lambda: fh_prefork.context().feature("T").exists, 30,
                       "fh_prefork to receive the features")
            provider = FeatureHubProvider()
            # openfeature-sdk < 0.10 has no set_provider_and_wait: set_provider initialises
            getattr(api, "set_provider_and_wait", api.set_provider)(provider)
            client = api.get_client()
            nz = EvaluationContext("user-1", {"country": "new_zealand"})

            def direct_flag() -> object:
                return fh_prefork.context().feature("X").is_enabled

            def provider_flag() -> object:
                return provider.resolve_boolean_details("X", False).value

            def client_flag() -> object:
                return client.get_boolean_value("X", False)

            def resolvers(key: str) -> dict[str, Callable[[], object]]:
                """The three ways to resolve string feature ``key`` for a New Zealand user."""
                return {
                    "direct": lambda: fh_prefork.context().user_key("user-1").attribute_values(
                        "country", ["new_zealand"]).feature(key).get_string,
                    "provider": lambda: provider.resolve_string_details(key, "d", nz).value,
                    "client": lambda: client.get_string_value(key, "d", nz)}

            fns: dict[str, Callable[[], object]] = {
                "direct_flag": direct_flag, "provider_flag": provider_flag,
                "client_flag": client_flag}
            for case, key in (("targeted", "T"), ("third", "M")):
                fns.update({f"{via}_{case}": fn for via, fn in resolvers(key).items()})
            for name, fn in fns.items():
                want = True if name.endswith("flag") else "kiwi"
                assert fn() == want, f"{name} gave {fn()!r}"
            best = dict.fromkeys(fns, math.inf)
            for _ in range(repeat):
                for name, fn in fns.items():
                    best[name] = min(best[name], timeit.timeit(fn, number=number) / number)
        finally:
            api.shutdown()
            fh_prefork.stop_worker()
    reads = {
        "flag": ("fh_prefork.context().feature('X').is_enabled",
                 "provider.resolve_boolean_details('X', False)",
                 "client.get_boolean_value('X', False)"),
        "targeted": ("fh_prefork.context().user_key(..).attribute_values(..).feature('T')",
                     "provider.resolve_string_details('T', 'd', ctx)",
                     "client.get_string_value('T', 'd', ctx)"),
        "third": (   # the third of four strategies sharing one value matches
            "fh_prefork.context().user_key(..).attribute_values(..).feature('M')",
            "provider.resolve_string_details('M', 'd', ctx)",
            "client.get_string_value('M', 'd', ctx)"),
    }
    rows = []
    for what, (direct, via_provider, via_client) in reads.items():
        base = best[f"direct_{what}"]
        for label, key in ((direct, "direct"), (via_provider, "provider"),
                           (via_client, "client")):
            ns = best[f"{key}_{what}"]
            rows.append({"case": what, "read": label, "ns": round(ns * 1e9),
                         "ratio": round(ns / base, 2)})
    client_ratio = best["client_flag"] / best["direct_flag"]
    provider_ratio = best["provider_flag"] / best["direct_flag"]
    b.results["openfeature"] = {
        "rows": rows, "client_ratio": round(client_ratio, 2),
        "provider_ratio": round(provider_ratio, 2),
        # what a flag read costs on top of a direct read: the provider's part, the SDK's part
        "provider_overhead_ns": round((best["provider_flag"] - best["direct_flag"]) * 1e9),
        "sdk_overhead_ns": round((best["client_flag"] - best["provider_flag"]) * 1e9),
        "number": number, "repeat": repeat}
    b.emit(table(f"OpenFeature resolution cost (best of {repeat} x {number}, same process): "
                 f"client {client_ratio:.1f}x direct, provider alone {provider_ratio:.2f}x",
                 [("case", "case"), ("read", "read"), ("ns per read", "ns"),
                  ("x direct", "ratio")], rows))


# -- driver -------------------------------------------------------------------------------------

def section_push(b: Bench) -> None:
    from ..testing import redis as redis_mod
    from .push import PUSH_UPDATES, describe, measure

    followers = 6
    # enough updates for a p99 (push); polling states p50/p90/max with its n
    push_updates, poll_updates = (10, 4) if b.quick else (PUSH_UPDATES, 30)
    idle = 3.0 if b.quick else 20.0     # s with nothing changing: what a store costs idle
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
            _progress(f"push: {backend} {'push' if push else 'polling'}, refresh {refresh:g} s, "
                      f"{updates} updates")
            r = measure(url, backend, followers=followers, updates=updates, refresh=refresh,
                        push=push, idle=idle)
            stats = r.stats()   # n, p50, p90, p99, max; a percentile n cannot support is None
            _progress(f"push: {backend} {'push' if push else 'polling'}: {describe(stats)}")
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


RUNNERS: dict[str, Callable[[Bench], None]] = {
    "storm": lambda b: section_storm(b, "distinct"),
    "same": lambda b: section_storm(b, "same"),
    "propagation": section_propagation,
    "cold": section_cold,
    "memory": section_memory,
    "read": section_read,
    "edge": section_edge,
    "openfeature": section_openfeature,
    "push": section_push,
}


def run_bench(quick: bool = False, json_path: str = "bench-results.json",
              only: Sequence[str] | None = None) -> int:
    from ..testing import memcached as memcached_mod
    from ..testing import redis as redis_mod

    chosen = [s for s in SECTIONS if not only or s in only]
    tmp = tempfile.mkdtemp(prefix="fh-prefork-bench-")
    os.chmod(tmp, 0o700)
    started = time.monotonic()
    server: Any = None
    redis_server: Any = None
    bench = Bench(quick=quick, tmp=tmp)
    failures: dict[str, str] = {}
    command = "fh-prefork " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("fh-prefork") \
        else "fh-prefork bench" + (" --quick" if quick else "")
    print(f"fh-prefork bench{' (quick)' if quick else ''}: {', '.join(chosen)}\n", flush=True)
    try:
        if memcached_mod.available():
            server = memcached_mod.Memcached().start()
            bench.memcache_url = server.url
        else:
            _progress("memcached is not installed: memcache rows are skipped")
        if redis_mod.available() and importlib.util.find_spec("redis") is not None:
            redis_server = redis_mod.RedisServer().start()
            bench.redis_url = redis_server.url
        else:
            _progress("redis-server or redis-py (the redis extra) is missing: redis rows "
                      "are skipped")
        for name in chosen:
            section_started = time.monotonic()
            try:
                RUNNERS[name](bench)
            except Exception as err:  # one broken section must not hide the others
                failures[name] = f"{type(err).__name__}: {err}"
                bench.results[name] = {"error": failures[name]}
                print(f"{name}: FAILED: {failures[name]}\n", flush=True)
            bench.results.setdefault(name, {})["seconds"] = round(
                time.monotonic() - section_started, 1)
            _progress(f"{name} done in {time.monotonic() - section_started:.1f} s")
    finally:
        if server is not None:
            server.stop()
        if redis_server is not None:
            redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - started
    document = {
        "meta": {"command": command, "quick": quick, "sections": chosen,
                 "seconds": round(total, 1), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "python": platform.python_version(), "platform": platform.platform(),
                 "cpus": os.cpu_count(), "memcached": bench.memcache_url is not None,
                 "redis": bench.redis_url is not None,
                 "failures": failures},
        "sections": bench.results,
    }
    with open(json_path, "w") as f:
        json.dump(document, f, indent=2, default=str)
    print(f"total {total:.0f} s; results written to {json_path}", flush=True)
    return 1 if failures else 0
