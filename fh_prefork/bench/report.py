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

import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from .common import Bench, percentile, progress, table
from .section import cold, edge, memory, openfeature, propagation, push, read, storm
from .sections import SECTIONS as SECTIONS  # the names the CLI and tests import from here

__all__ = ["RUNNERS", "SECTIONS", "percentile", "run_bench", "table"]

RUNNERS: dict[str, Callable[[Bench], None]] = {
    "storm": lambda b: storm.run(b, "distinct"),
    "same": lambda b: storm.run(b, "same"),
    "propagation": propagation.run,
    "cold": cold.run,
    "memory": memory.run,
    "read": read.run,
    "edge": edge.run,
    "openfeature": openfeature.run,
    "push": push.run,
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
            progress("memcached is not installed: memcache rows are skipped")
        if redis_mod.available() and importlib.util.find_spec("redis") is not None:
            redis_server = redis_mod.RedisServer().start()
            bench.redis_url = redis_server.url
        else:
            progress("redis-server or redis-py (the redis extra) is missing: redis rows "
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
            progress(f"{name} done in {time.monotonic() - section_started:.1f} s")
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
