"""What every benchmark section shares: the settings, the Bench record, tables, percentiles."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

API_KEY = "bench/env-bench/client*bench-secret"
FLAG = "BENCH_FLAG"
REFRESH = 0.5


def progress(msg: str) -> None:
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


def unique_prefix() -> str:
    """A key prefix no other run (or section) of this host uses."""
    return f"bench{os.getpid()}x{time.time_ns() % 10**10}"


def server_env(edge_url: str, store: str, prefix: str, **extra: str) -> dict[str, str]:
    return {"FEATUREHUB_EDGE_URL": edge_url, "FEATUREHUB_API_KEY": API_KEY,
            "FH_PREFORK_STORE": store, "FH_PREFORK_PREFIX": prefix,
            "FH_PREFORK_REFRESH_SECONDS": str(REFRESH), "FH_PREFORK_EDGE_BACKOFF_MAX": "2",
            **extra}


def wait_serving(cluster: Any, version: int, timeout: float = 60) -> None:
    """Until every worker of ``cluster`` serves the benchmark flag at ``version``."""
    from ..testing.cluster import wait_until

    wait_until(lambda: all(f[FLAG]["version"] == version
                           for f in cluster.flags(FLAG, timeout=timeout).values()),
               timeout, f"every worker to serve {FLAG} v{version}", interval=0.1)
