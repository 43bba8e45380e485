"""Edge connections with FH_PREFORK_EDGE_MODE=every against leader."""

from __future__ import annotations

from typing import Any

from ..common import (
    FLAG,
    Bench,
    progress,
    server_env,
    table,
    unique_prefix,
    wait_serving,
)


def run(b: Bench) -> None:
    from ...testing.cluster import Cluster
    from ...testing.edge_simulator import EdgeSimulator, make_feature

    workers = 3 if b.quick else 8
    backend, url = b.backends()[0]
    rows = []
    for mode in ("every", "leader"):
        progress(f"Edge connections: {workers} workers, FH_PREFORK_EDGE_MODE={mode}")
        row: dict[str, Any] = {"mode": mode, "workers": workers}
        try:
            with EdgeSimulator(keepalive_interval=1.0) as edge:
                edge.set_features([make_feature(FLAG, False, 1)])
                env = server_env(edge.url, url, unique_prefix(), FH_PREFORK_EDGE_MODE=mode)
                with Cluster("gunicorn", workers, env, log_dir=b.tmp) as cluster:
                    wait_serving(cluster, 1, timeout=30)
                    want = workers if mode == "every" else 1
                    def settled_at(want: int = want) -> bool:
                        return len(edge.streams()) == want

                    settled = edge.wait_until(settled_at, timeout=10 if mode == "leader" else 30)
                    streams = edge.open_streams
                    edge.push_feature(make_feature(FLAG, True, 2))
                    wait_serving(cluster, 2, timeout=30)
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
