# gunicorn.conf.py: fh_prefork's hooks, plus prometheus_client's multiprocess clean-up.
import os
from typing import Any

from prometheus_client import multiprocess

from fh_prefork.gunicorn import on_reload, on_starting, post_fork, worker_exit  # noqa: F401

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)   # a killed worker's gauges go with it
