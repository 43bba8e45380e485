# gunicorn.conf.py: the fh_prefork hooks are one import; the rest is ordinary gunicorn.
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
