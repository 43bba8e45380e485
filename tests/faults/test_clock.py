"""Wall-clock jumps do not disturb the refresh timer: it runs on the monotonic clock."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from fh_prefork import FileSessionStore
from tests.conftest import make_config
from tests.support.procs import wait_for


def test_refresh_keeps_its_period_when_the_wall_clock_jumps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_time = time.time
    jumps = itertools.cycle([0.0, 3600.0, -86400.0, 10**6, -(10**6)])
    monkeypatch.setattr(time, "time", lambda: real_time() + next(jumps))  # hours back and forth
    period = 0.05
    store = FileSessionStore(tmp_path, make_config(),
                             {"refresh_timeout": period, "refresh_jitter": 0.2,
                              "push": False})  # the timer alone: no notification ticks
    try:
        wait_for(lambda: len(store.status()["recent_ticks"]) >= 20, 5, what="20 ticks")
        ticks = store.status()["recent_ticks"]
    finally:
        store.close()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert min(gaps) >= period * 0.8 - 0.005, gaps
    # a jump would show as a gap of hours or none at all; a loaded machine only adds delay
    assert max(gaps) < 1.0, gaps
