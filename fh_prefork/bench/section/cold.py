"""Cold start: the store constructor with 500 features, and a fresh worker's first answer.

The constructor runs as in a fresh worker: with the process's verdict caches
empty (see fh_prefork.verdicts; a prefork master never reads the store, so a
forked worker inherits none), so every stored entry is checked. Beside it, the
same constructor reading a value this process has checked before (a worker
that restarts its store, or a master that read the store before forking).

The constructor leaves some of its work to the store thread's first acts
(checking the stored fingerprint, remembering the entries by text for later
reads): the process's CPU time until those are done, every thread's, is shown
too, for a fresh worker.

Both are set beside their floor, measured in the same run (the machine may be
shared): the FeatureHub SDK alone taking the same 500 states, a config's
repository notified of the parsed list, with no store, check or thread.

With the ``speedups`` extra installed (orjson parses the value: see
fh_prefork.json_parser), the fresh worker's constructor is also measured, in
the same run, as it is without it.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
import urllib.error
from typing import Any

import psutil

from ..common import (
    API_KEY,
    Bench,
    progress,
    server_env,
    table,
    unique_prefix,
)


def _fill(url: str, prefix: str, n: int) -> None:
    from featurehub_sdk.featurehub_config import FeatureHubConfig

    from ...store import open_store
    from ...testing.edge_simulator import make_feature

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


def sdk_alone(states: bytes) -> float:
    """Seconds the FeatureHub SDK alone takes to hold ``states`` (a JSON array): the floor of
    any store's start. The parse is not timed; the config is, as the constructor's is not."""
    from featurehub_sdk.featurehub_config import FeatureHubConfig

    parsed = json.loads(states)
    started = time.perf_counter()
    config = FeatureHubConfig("http://127.0.0.1:9/", [API_KEY])
    config.repository().notify("features", parsed)
    took = time.perf_counter() - started
    discard(config)
    return took


def discard(config: Any) -> None:
    """Free a measured config's 500 features now, by reference counting.

    The SDK's holders and repository refer to each other, so a dropped config
    is about 2,000 objects only the cyclic collector frees; left to it, that
    collection (a young-generation pass over the last samples' garbage, up to
    a millisecond) lands inside a later sample about one time in three. A
    worker starting up has no earlier sample's garbage to collect.
    """
    config.repository().features.clear()


def _construct(url: str, prefix: str, n_features: int,
               start_up_cpu: list[float] | None = None) -> float:
    """Seconds one store constructor takes to read and replay ``n_features`` states.

    ``start_up_cpu``: also wait for what the store thread does first (check the
    stored fingerprint, start push, remember the entries by text) and append the
    process's CPU seconds from the constructor's start to then, every thread's.
    """
    from featurehub_sdk.featurehub_config import FeatureHubConfig

    from ... import features as fs
    from ...store import open_store
    from ...testing.cluster import wait_until

    config = FeatureHubConfig("http://127.0.0.1:9/", [API_KEY])
    cpu = time.process_time()
    started = time.perf_counter()
    store = open_store(url, config, {"prefix": prefix, "refresh_timeout": 3600.0})
    elapsed = time.perf_counter() - started
    assert store is not None
    if start_up_cpu is not None:
        # the entries remembered: the start-up's last act
        wait_until(lambda: len(fs.VERDICTS) >= n_features, 5, "the store thread's start-up",
                   interval=0.001)
        start_up_cpu.append(time.process_time() - cpu)
    held = sum(1 for h in config.repository().features.values() if h.exists)
    store.close(flush_timeout=0)
    discard(config)
    if held != n_features:
        raise RuntimeError(f"constructor replayed {held} of {n_features} features")
    return elapsed


def run(b: Bench) -> None:

    from ... import features as fs
    from ... import json_parser
    from ...testing.cluster import Cluster, free_port, wait_until
    from ...testing.edge_simulator import make_feature

    n_features = 500
    orjson_in_use = json_parser.parser() != json_parser.STANDARD_LIBRARY
    states = fs.encode([make_feature(f"F{i:03}", i % 2 == 0, 1) for i in range(n_features)])
    repeats, restarts = (3, 1) if b.quick else (20, 5)
    rows = []
    for backend, url in b.backends():
        prefix = unique_prefix()
        _fill(url, prefix, n_features)
        progress(f"cold start: store constructor with {n_features} features on {backend}")
        took: list[float] = []
        known: list[float] = []
        start_up: list[float] = []
        floor: list[float] = []
        plain_json: list[float] = []
        gc.collect()    # the fill's and the last section's garbage: not this section's to pay
        for _ in range(repeats):
            floor.append(sdk_alone(states))     # interleaved: the same moment's machine
            fs.VERDICTS.clear()                 # a fresh worker's caches
            took.append(_construct(url, prefix, n_features))
            known.append(_construct(url, prefix, n_features))   # the value checked before
            fs.VERDICTS.clear()
            _construct(url, prefix, n_features, start_up_cpu=start_up)
            if orjson_in_use:   # the same fresh worker without the speedups extra
                fs.VERDICTS.clear()
                with json_parser.standard_library_only():
                    plain_json.append(_construct(url, prefix, n_features))
        median, sdk = statistics.median(took), statistics.median(floor)
        row: dict[str, Any] = {"backend": backend, "features": n_features,
                               "constructor_ms_median": round(median * 1000, 2),
                               "constructor_ms_max": round(max(took) * 1000, 2),
                               "known_value_ms_median": round(statistics.median(known) * 1000,
                                                              2),
                               "start_up_cpu_ms_median": round(
                                   statistics.median(start_up) * 1000, 2),
                               "sdk_alone_ms_median": round(sdk * 1000, 2),
                               "json_parser": json_parser.parser(),
                               "standard_library_json_ms_median": (
                                   round(statistics.median(plain_json) * 1000, 2)
                                   if plain_json else None),
                               "constructor_to_sdk": round(median / sdk, 1),
                               "runs": repeats, "load_average": round(os.getloadavg()[0], 2)}
        row["standard_library_json_shown"] = row["standard_library_json_ms_median"] \
            if plain_json else "(the headline)"
        if b.quick and backend == "memcache":
            # a table cell that says why, not "None": the JSON keeps the figure empty
            row["worker_first_answer_ms_median"] = None
            row["worker_first_answer_shown"] = QUICK_SKIPS_WORKER_START
            rows.append(row)
            continue
        progress(f"cold start: fresh gunicorn worker serving {n_features} features from "
                  f"{backend}, Edge unreachable ({restarts} restarts)")
        dead_edge = f"http://127.0.0.1:{free_port()}/"
        firsts: list[float] = []
        with Cluster("gunicorn", 1, server_env(dead_edge, url, prefix),
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
    b.emit(table(f"Cold start with {n_features} features in the store, values parsed by "
                 f"{json_parser.parser()}",
                 [("backend", "backend"), ("constructor ms (median)", "constructor_ms_median"),
                  ("constructor ms (max)", "constructor_ms_max"),
                  ("without speedups ms (median)", "standard_library_json_shown"),
                  ("value checked before ms (median)", "known_value_ms_median"),
                  ("start-up CPU ms, all threads (median)", "start_up_cpu_ms_median"),
                  ("SDK alone ms (median)", "sdk_alone_ms_median"),
                  ("constructor / SDK", "constructor_to_sdk"), ("load", "load_average"),
                  ("worker fork -> first answer ms (median)", "worker_first_answer_shown")],
                 rows))
