"""Capacity: what one worker costs its store and Edge, measured on real servers.

``python -m fh_prefork.bench.capacity [--workers 4] [--idle 60] [--updates 30]`` starts, for
each shared backend (memcached, Redis) and each Edge mode (``every``, ``leader``), a
throwaway store server of its own, the local Edge simulator holding ``--features``
features, and a real gunicorn with ``--workers`` workers at the default settings (refresh
5 s, or 1 s in leader mode; a full read every 12th refresh). It then counts, from the
store server's own statistics (memcached ``stats``, Redis ``INFO``; the bench's own
questions subtracted), the operations and bytes over

* an idle window of ``--idle`` seconds (nothing changes), and
* an update window: ``--updates`` feature changes sent by Edge, one a second,

and the Edge streams open at the simulator. Per worker and second, these are what
``docs/capacity.md`` multiplies out for fleets of hosts. Every process started here is
stopped by pid; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..testing.cluster import Cluster
from ..testing.edge_simulator import EdgeSimulator, make_feature

API_KEY = "capacity/env-capacity/client*secret"


def _features(n: int, version: int = 1) -> list[dict[str, Any]]:
    """``n`` features of the usual mix: flags, strings, numbers (no strategies)."""
    out = []
    for i in range(n):
        kind = ("BOOLEAN", "STRING", "NUMBER")[i % 3]
        value: Any = {"BOOLEAN": i % 2 == 0, "STRING": f"value-{i}", "NUMBER": i}[kind]
        out.append(make_feature(f"FEATURE_{i:04d}", value, version, type=kind))
    return out


class _Counter:
    """Operations and bytes a store server has handled, from its own statistics."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url

    def sample(self) -> dict[str, float]:
        if self.backend == "memcache":
            from pymemcache.client.base import Client

            host, port = self.url.removeprefix("memcache://").rsplit(":", 1)
            client = Client((host, int(port)), connect_timeout=2, timeout=2)
            try:
                s = {k.decode() if isinstance(k, bytes) else k: v
                     for k, v in client.stats().items()}
            finally:
                client.close()
            ops = sum(int(s.get(k, 0)) for k in (
                "cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses",
                "incr_hits", "incr_misses"))
            return {"ops": float(ops), "reads": float(s.get("cmd_get", 0)),
                    "writes": float(int(s.get("cmd_set", 0))),
                    "bytes_in": float(s.get("bytes_read", 0)),
                    "bytes_out": float(s.get("bytes_written", 0)),
                    "connections": float(s.get("curr_connections", 0)),
                    "own_ops": 0.0}
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            stats = client.info("stats")
            clients = client.info("clients")
        finally:
            client.close()
        return {"ops": float(stats["total_commands_processed"]),
                "reads": float("nan"), "writes": float("nan"),
                "bytes_in": float(stats["total_net_input_bytes"]),
                "bytes_out": float(stats["total_net_output_bytes"]),
                "connections": float(clients["connected_clients"]),
                "own_ops": 3.0}   # INFO stats, INFO clients, and the connection's HELLO/SELECT

    def delta(self, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        out = {k: after[k] - before[k] for k in ("ops", "reads", "writes", "bytes_in",
                                                 "bytes_out")}
        out["ops"] -= before["own_ops"]
        return out


@contextmanager
def _store_server(backend: str) -> Iterator[str]:
    if backend == "memcache":
        from ..testing.memcached import Memcached

        with Memcached(item_size="1m") as server:
            yield server.url
    else:
        from ..testing.redis import RedisServer

        with RedisServer() as server:
            yield server.url


def _stored_bytes(backend: str, url: str, key: str) -> int:
    if backend == "memcache":
        from pymemcache.client.base import Client

        host, port = url.removeprefix("memcache://").rsplit(":", 1)
        client = Client((host, int(port)), connect_timeout=2, timeout=2)
        try:
            value = client.get(key)
        finally:
            client.close()
    else:
        import redis

        r = redis.Redis.from_url(url, socket_timeout=2)
        try:
            value = r.get(key)
        finally:
            r.close()
    return len(value) if isinstance(value, bytes) else 0


def measure(backend: str, mode: str, workers: int, idle: float, updates: int,
            n_features: int, log: Callable[[str], None],
            refresh: float | None = None) -> dict[str, Any]:
    """One backend and mode: per-worker store load idle and under updates, Edge streams."""
    prefix = f"cap{os.getpid()}"
    with _store_server(backend) as url, EdgeSimulator(keepalive_interval=5.0) as edge:
        edge.set_features(_features(n_features))
        env: dict[str, str | None] = {
            "FEATUREHUB_EDGE_URL": edge.url, "FEATUREHUB_API_KEY": API_KEY,
            "FH_PREFORK_STORE": url, "FH_PREFORK_PREFIX": prefix, "FH_PREFORK_EDGE_MODE": mode,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        if refresh is not None:
            env["FH_PREFORK_REFRESH_SECONDS"] = str(refresh)
        for name in list(os.environ):
            if name.startswith("FH_PREFORK_") and name not in env:
                env[name] = None   # Cluster unsets it: the defaults are measured
        counter = _Counter(backend, url)
        log_dir = tempfile.mkdtemp(prefix="fh-capacity-")
        with Cluster("gunicorn", workers, env, log_dir=log_dir):
            settle_until = time.monotonic() + 60
            while _stored_bytes(backend, url, f"{prefix}_env-capacity") == 0:
                if time.monotonic() > settle_until:
                    raise RuntimeError("the store never received the state")
                time.sleep(0.2)
            time.sleep(6.0)   # every worker started, past its first refresh
            state_bytes = _stored_bytes(backend, url, f"{prefix}_env-capacity")
            log(f"{backend} {mode}: {workers} workers settled; state {state_bytes} bytes for "
                f"{n_features} features; idle window {idle:g} s")
            before = counter.sample()
            time.sleep(idle)
            after = counter.sample()
            idle_delta = counter.delta(before, after)
            log(f"{backend} {mode}: update window, {updates} updates one a second")
            before = counter.sample()
            started = time.monotonic()
            for i in range(updates):
                feature = _features(n_features, version=2 + i)[i % n_features]
                edge.push_feature(feature)
                time.sleep(max(0.0, started + i + 1 - time.monotonic()))
            time.sleep(2.0)  # the last update's writes and the followers' reads
            window = time.monotonic() - started
            after = counter.sample()
            update_delta = counter.delta(before, after)
            streams = len(edge.streams())
            connections = int(after["connections"])
    per_worker_idle = {k: v / idle / workers for k, v in idle_delta.items()}
    # an update's own cost: what the window took beyond the idle rate, per update
    per_update = {k: (update_delta[k] - idle_delta[k] / idle * window) / updates
                  for k in update_delta}
    return {"backend": backend, "mode": mode, "workers": workers, "features": n_features,
            "refresh_seconds": refresh or (1.0 if mode == "leader" else 5.0),
            "state_bytes": state_bytes, "idle_seconds": idle, "updates": updates,
            "update_window_seconds": round(window, 1),
            "idle_per_worker_per_second": per_worker_idle, "per_update_all_workers": per_update,
            "edge_streams": streams, "store_connections": connections}


def _fmt(value: float) -> str:
    if value != value:  # NaN: not counted by this backend
        return "-"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| backend | mode | refresh | workers | idle ops/s per worker | "
             "idle bytes/s per worker (in + out) | ops per update (all workers) | "
             "bytes per update (all workers) | Edge streams | store connections |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        idle, upd = r["idle_per_worker_per_second"], r["per_update_all_workers"]
        lines.append(
            f"| {r['backend']} | {r['mode']} | {r['refresh_seconds']:g} s | {r['workers']} | "
            f"{_fmt(idle['ops'])} | "
            f"{_fmt(idle['bytes_in'] + idle['bytes_out'])} | {_fmt(upd['ops'])} | "
            f"{_fmt(upd['bytes_in'] + upd['bytes_out'])} | {r['edge_streams']} | "
            f"{r['store_connections']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fh_prefork.bench.capacity",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--updates", type=int, default=30, help="updates, one a second")
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--backends", nargs="+", default=["memcache", "redis"],
                        choices=["memcache", "redis"])
    parser.add_argument("--modes", nargs="+", default=["every", "leader"],
                        choices=["every", "leader"])
    parser.add_argument("--refresh", type=float, default=None,
                        help="FH_PREFORK_REFRESH_SECONDS (default: the setting's default)")
    parser.add_argument("--json", metavar="PATH", help="write the rows here too")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanups

    def log(line: str) -> None:
        print(f"[capacity] {line}", file=sys.stderr, flush=True)

    taken = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = [measure(backend, mode, args.workers, args.idle, args.updates, args.features, log,
                    refresh=args.refresh)
            for backend in args.backends for mode in args.modes]
    print(f"Capacity, taken {taken} on {platform.node() or 'this host'} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()}), gunicorn sync "
          f"workers, refresh {args.refresh or 'default'}, {args.features} features, "
          f"idle {args.idle:g} s, {args.updates} updates:\n")
    print(report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"taken": taken, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
