# The gunicorn hooks run in UvicornWorker processes exactly as in sync workers.
import os

from fh_prefork.gunicorn import (  # noqa: F401
    child_exit,
    on_reload,
    on_starting,
    post_fork,
    worker_exit,
)

worker_class = "uvicorn.workers.UvicornWorker"
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
