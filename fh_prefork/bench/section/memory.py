"""Memory and threads per worker, fh_prefork against the plain SDK."""

from __future__ import annotations

import statistics

import psutil

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
        progress(f"memory: {label}, {workers} workers")
        with EdgeSimulator(keepalive_interval=1.0) as edge:
            edge.set_features([make_feature(FLAG, True, 1)] +
                              [make_feature(f"F{i:02}", i % 2 == 0, 1) for i in range(49)])
            app = "fh_prefork.bench.plain_app:application" if kind is PlainCluster else \
                "fh_prefork.testing.probe_app:application"
            with kind("gunicorn", workers, server_env(edge.url, url, unique_prefix()), app=app,
                      log_dir=b.tmp) as cluster:
                edge.wait_for_streams(workers, 30)
                wait_serving(cluster, 1)
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
