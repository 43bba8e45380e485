"""Holds each worker's start open, so that a test can stop a server while a worker starts.

On a test server's ``PYTHONPATH``: Python imports this at start-up in the master, and
every worker inherits the patch. A worker touches ``$FH_TEST_HELD_START.<pid>`` and then
waits ``$FH_TEST_HOLD_SECONDS``:

* ``FH_TEST_HOLD_WHERE=start`` (the default): inside fh_prefork's start
  (fh_prefork.runtime.start_worker, in the post-fork hook), once it has connected to
  Edge and opened the store;
* ``after``: after gunicorn's ``post_fork`` of fh_prefork has returned, as an
  application's own ``post_fork`` that calls ours and then does slow work of its own.
"""

from __future__ import annotations

import os
import time
from typing import Any

import fh_prefork.gunicorn
import fh_prefork.runtime as runtime


def _hold() -> None:
    marker = os.environ.get("FH_TEST_HELD_START")
    if marker:
        with open(f"{marker}.{os.getpid()}", "w"):
            pass
    time.sleep(float(os.environ.get("FH_TEST_HOLD_SECONDS", "3")))


_log_start = runtime._log_start
_post_fork = fh_prefork.gunicorn.post_fork


def _held_start(worker: runtime.Worker, how: str) -> None:
    _hold()
    _log_start(worker, how)


def _post_fork_then_hold(server: Any, worker: Any) -> None:
    _post_fork(server, worker)
    _hold()


if os.environ.get("FH_TEST_HOLD_WHERE", "start") == "start":
    runtime._log_start = _held_start
else:
    fh_prefork.gunicorn.post_fork = _post_fork_then_hold
