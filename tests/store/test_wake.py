"""The store thread never busy-waits: ``next_wake`` through every order of events, and a real
store through the order that once spun a core (a failed write, then the refresh tick's own
write succeeding before the retry time)."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace
from typing import Any

import psutil
import pytest

from fh_prefork.store import SessionStore, StoreUnavailable
from fh_prefork.store.wake import WakeState, next_wake
from tests.conftest import make_config
from tests.support.procs import hold_for, wait_for
from tests.support.stores import feat, repo_of

PERIOD = 0.5          # the refresh period of the model
RETRY = PERIOD / 4    # a failed write's retry delay, as the store sets it
TASK_EVERY = 1.0
EVENTS = ("dirty", "flush failed", "tick flushed", "task due", "notified", "closed")


@dataclass
class Model:
    """The store thread's state as the events leave it; ``retry_at`` is deliberately left
    set when the tick's own flush succeeds (what the old loop did), so ``next_wake`` must
    cope with a stale retry time on its own."""

    now: float = 0.0
    up: bool = True
    wake: WakeState = WakeState(closed=False, dirty=False, retry_at=None, next_tick=PERIOD,
                                task_due=TASK_EVERY)

    def runnable(self) -> bool:
        """What the loop's body would do work for, judged independently of ``next_wake``."""
        w, now = self.wake, self.now
        return (w.closed or w.notified or w.refresh_requested or now >= w.next_tick
                or (w.task_due is not None and now >= w.task_due)
                or (w.dirty and (w.retry_at is None or now >= w.retry_at)))

    def flush(self) -> None:
        if self.up:
            self.wake = replace(self.wake, dirty=False)     # retry_at left as it was
        else:
            self.wake = replace(self.wake, dirty=True, retry_at=self.now + RETRY)

    def body(self) -> None:
        """One pass of the loop's body: tasks, a due flush, the tick (which flushes if dirty)."""
        w, now = self.wake, self.now
        if w.task_due is not None and now >= w.task_due:
            self.wake = replace(self.wake, task_due=now + TASK_EVERY)
        w = self.wake
        if w.dirty and (w.retry_at is None or now >= w.retry_at):
            self.flush()
        w = self.wake
        if w.notified or w.refresh_requested or now >= w.next_tick:
            self.wake = replace(self.wake, notified=False, refresh_requested=False,
                                next_tick=now + PERIOD if now >= w.next_tick else w.next_tick)
            if self.wake.dirty:
                self.flush()

    def apply(self, event: str) -> None:
        if event == "dirty":
            self.wake = replace(self.wake, dirty=True)
        elif event == "flush failed":
            self.up = False
            self.wake = replace(self.wake, dirty=True)
        elif event == "tick flushed":
            self.up = True
            self.now = max(self.now, self.wake.next_tick)
        elif event == "task due":
            self.wake = replace(self.wake, task_due=self.now)
        elif event == "notified":
            self.wake = replace(self.wake, notified=True)
        elif event == "closed":
            self.wake = replace(self.wake, closed=True)

    def run_for(self, seconds: float) -> None:
        """The loop for ``seconds`` of model time: wait until each wake-up, run when runnable."""
        end = self.now + seconds
        passes_now = 0
        for _ in range(10_000):
            if self.now >= end:
                return
            at = next_wake(self.wake, self.now)
            if at is None:
                assert self.runnable(), f"run-now with nothing to run: {self}"
                if self.wake.closed:
                    return          # the thread shuts down
                passes_now += 1
                assert passes_now <= 3, f"busy loop at t={self.now}: {self}"
                self.body()
            else:
                assert at > self.now, f"deadline {at} in the past at t={self.now}: {self}"
                assert not self.runnable(), f"waits while runnable: {self}"
                self.now, passes_now = min(at, end), 0
        raise AssertionError(f"the loop did not reach t={end}: {self}")


@pytest.mark.parametrize("order", list(itertools.permutations(EVENTS)),
                         ids=lambda order: "-".join(e.replace(" ", "_") for e in order))
def test_next_wake_never_busy_waits_in_any_order_of_events(order: tuple[str, ...]) -> None:
    model = Model()
    model.run_for(0.3)
    for event in order:
        model.apply(event)
        model.run_for(RETRY / 2)      # within the retry time: the tick can overtake it
        model.run_for(2 * PERIOD)     # and well past it
    assert model.wake.closed


def test_a_stale_retry_time_is_never_a_deadline() -> None:
    """The state that spun a core: nothing dirty, a retry time left in the past."""
    state = WakeState(closed=False, dirty=False, retry_at=1.0, next_tick=5.0, task_due=None)
    assert next_wake(state, now=2.0) == 5.0
    assert next_wake(replace(state, dirty=True), now=2.0) is None
    assert next_wake(replace(state, dirty=True), now=0.5) == 1.0


def _thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds one thread of this process used so far (psutil, by its native id)."""
    for t in psutil.Process().threads():
        if t.id == thread.native_id:
            return float(t.user_time + t.system_time)
    raise AssertionError(f"thread {thread.name} not found")


@pytest.mark.parametrize("backend_kind", ["file"])
def test_a_tick_that_writes_before_the_retry_time_leaves_the_thread_idle(
        make_store: Any) -> None:
    """A write fails; the refresh tick's own write then succeeds before the retry time.
    The thread must sleep until its next tick, not loop on a retry time that has passed."""
    config = make_config()
    store: SessionStore = make_store(config, refresh_timeout=4.0)
    backend: Any = store._backend
    real_read = backend.read
    down = [False]

    def read() -> Any:
        if down[0]:
            raise StoreUnavailable("connection refused")
        return real_read()

    backend.read = read
    down[0] = True
    repo_of(config).notify("features", [feat("A", 1)])
    wait_for(lambda: store.counters.errors >= 1, 5, what="the write to fail")
    down[0] = False
    assert store.refresh(2), "the tick ran"       # within the ~1 s retry time: it writes
    assert store.flush(2), "the tick's write held the update"
    assert store._thread is not None
    before = _thread_cpu(store._thread)
    hold_for(2.5)                                 # past the retry time, before the next tick
    used = _thread_cpu(store._thread) - before
    print(f"store thread CPU over 2.5 s after the tick's write: {used:.3f} s")
    assert used < 0.5, f"the store thread busy-waited: {used:.2f} CPU s in 2.5 s"
