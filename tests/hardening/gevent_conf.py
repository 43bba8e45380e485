"""The benchmark's gunicorn config (what users write), plus when each worker_exit ran, how long."""

import time
from typing import Any

from fh_prefork.gunicorn import worker_exit as fh_worker_exit
from fh_prefork.testing.gunicorn_conf import *  # noqa: F403


def worker_exit(server: Any, worker: Any) -> None:
    began = time.time()
    fh_worker_exit(server, worker)
    server.log.warning("fh-test worker_exit at %.6f took %.6f", began, time.time() - began)
