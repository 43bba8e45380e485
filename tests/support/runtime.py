"""A fresh fh_prefork runtime in the test process, pointed at an Edge simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fh_prefork import runtime


@contextmanager
def isolated_runtime(monkeypatch: pytest.MonkeyPatch, edge_url: str, api_key: str,
                     tmp_path: Path) -> Iterator[None]:
    """Settings for ``edge_url`` and a file store under ``tmp_path``; on leaving, the worker
    stopped and the overrides and master mark dropped, so the next test starts afresh."""
    monkeypatch.setenv("FEATUREHUB_EDGE_URL", edge_url)
    monkeypatch.setenv("FEATUREHUB_API_KEY", api_key)
    monkeypatch.setenv("FH_PREFORK_STORE", f"file://{tmp_path}/store")
    monkeypatch.setenv("FH_PREFORK_REFRESH_SECONDS", "0.2")
    monkeypatch.setenv("FH_PREFORK_EDGE_BACKOFF_MAX", "1")
    yield
    runtime.stop_worker()
    runtime._overrides.clear()
    runtime._master_pid = None


def worker_status() -> runtime.WorkerStatus:
    """``fh_prefork.status()`` of a started worker (the test fails if none started here)."""
    worker = runtime.current_worker()
    assert worker is not None, "fh_prefork has not started in this process"
    return worker.status()
