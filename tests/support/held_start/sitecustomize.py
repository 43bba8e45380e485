"""Holds each worker's start open, so that a test can stop a server while a worker starts.

On a test server's ``PYTHONPATH``: Python imports this at start-up in the master, and
every worker inherits the patch. A worker's start (fh_prefork.runtime.start_worker, in
the post-fork hook) touches ``$FH_TEST_HELD_START.<pid>`` when it has connected to Edge
and opened the store, then waits ``$FH_TEST_HOLD_SECONDS`` before it finishes.
"""

from __future__ import annotations

import os
import time

import fh_prefork.runtime as runtime

_log_start = runtime._log_start


def _held(worker: runtime.Worker, how: str) -> None:
    marker = os.environ.get("FH_TEST_HELD_START")
    if marker:
        with open(f"{marker}.{os.getpid()}", "w"):
            pass
    time.sleep(float(os.environ.get("FH_TEST_HOLD_SECONDS", "3")))
    _log_start(worker, how)


runtime._log_start = _held
