"""The cost of one flag read, fh_prefork.context() against the plain SDK, same process."""

from __future__ import annotations

import asyncio
import math
import timeit
from collections.abc import Callable
from typing import Any

from ..common import (
    API_KEY,
    Bench,
    progress,
    table,
)


def run(b: Bench) -> None:
    from featurehub_sdk.featurehub_config import FeatureHubConfig

    import fh_prefork

    from ...testing.cluster import wait_until
    from ...testing.edge_simulator import EdgeSimulator, make_feature

    # many short samples: the best of them is what the read costs, not what a noisy VM did
    number, repeat = (2000, 3) if b.quick else (20000, 25)
    progress(f"flag read cost: {repeat} x {number} reads each, interleaved")
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
