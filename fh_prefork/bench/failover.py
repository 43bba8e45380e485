"""Leader mode, measured on real servers: Edge connections, fail-over time, propagation.

``python -m fh_prefork.bench.failover`` starts a throwaway memcached and the
local Edge simulator, then prints

* Edge connections held by 6 and 12 workers, with one and two masters sharing
  one store, in ``every`` and ``leader`` mode;
* fail-over time after SIGKILL of the leader (p50/max over ``--kills`` kills):
  from the kill to the new leader's stream opening at Edge;
* update propagation to followers (p50/p99): from the push at Edge to each
  follower serving the new version, as seen by an HTTP client polling the
  workers (an upper bound: it includes the polling interval).

The test suite calls the same functions with small numbers. Every process
started here is stopped by pid, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..testing.cluster import Cluster
from ..testing.edge_simulator import EdgeSimulator, make_feature
from ..testing.failover import (
    count_connections,
    measure_failover,
    measure_propagation,
    server_env,
    starter,
)


def _bench(kills: int, updates: int, workers_list: Sequence[int], log: Callable[[str], None],
           lease: float = 2.0, refresh: float = 0.5) -> dict[str, Any]:
    import tempfile

    from ..testing.memcached import Memcached

    out: dict[str, Any] = {"connections": [], "failover": None, "propagation": None}
    with Memcached() as memcached:
        for mode in ("every", "leader"):
            for workers in workers_list:
                for masters in (1, 2):
                    with EdgeSimulator(keepalive_interval=1.0) as edge:
                        edge.set_features([make_feature("FLAG", True, 1)])
                        env = server_env(edge.url, memcached.url,
                                         f"conn{mode}{workers}{masters}{os.getpid()}", mode=mode)
                        started: list[Cluster] = []
                        try:
                            row = count_connections(starter(env, started), edge, masters,
                                                    workers)
                        finally:
                            for cluster in started:
                                cluster.stop()
                        row["mode"] = mode
                        out["connections"].append(row)
                        log(f"{mode:6} {masters} master(s) x {workers:2} workers: "
                            f"{row['open_streams']} open Edge stream(s) "
                            f"(max concurrent {row['max_concurrent_streams']})")
        with EdgeSimulator(keepalive_interval=1.0) as edge:
            edge.set_features([make_feature("FLAG", True, 1)])
            env = server_env(edge.url, memcached.url, f"fail{os.getpid()}", lease=lease,
                             refresh=refresh)
            with Cluster("gunicorn", 6, env,
                         log_dir=tempfile.mkdtemp(prefix="fh-bench-")) as cluster:
                failover = measure_failover(cluster, edge, kills)
                out["failover"] = failover.seconds
                log(f"fail-over after SIGKILL of the leader (lease {lease:g} s, refresh "
                    f"{refresh:g} s, 6 workers, {kills} kills): p50 {failover.p50:.2f} s, "
                    f"max {failover.max:.2f} s")
                propagation = measure_propagation(cluster, edge, updates)
                out["propagation"] = propagation.seconds
                log(f"propagation to followers ({updates} updates x 5 followers, refresh "
                    f"{refresh:g} s): p50 {propagation.p50:.2f} s, p99 {propagation.p99:.2f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fh_prefork.bench.failover",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[6, 12],
                        help="worker counts for the connection table (0: skip it)")
    parser.add_argument("--lease", type=float, default=2.0, help="lease ttl, seconds")
    parser.add_argument("--refresh", type=float, default=0.5, help="follower refresh, seconds")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanups
    _bench(args.kills, args.updates, [w for w in args.workers if w > 0],
           lambda line: print(line, flush=True), lease=args.lease, refresh=args.refresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
