# gunicorn.conf.py: fh_prefork's hooks; child_exit drops a dead worker's gauges and status
# record in the master (a SIGKILLed or OOM-killed worker never ran its worker_exit).
import os

from fh_prefork.gunicorn import (  # noqa: F401
    child_exit,
    on_reload,
    on_starting,
    post_fork,
    worker_exit,
)

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
