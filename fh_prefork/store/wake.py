"""When the store thread runs next: one pure function of its state, so it cannot busy-wait.

The store thread sleeps on a condition until something is runnable: closing,
a task due, a refresh asked for or notified, the refresh tick due, or a dirty
state whose retry time (if a write failed) has come. Computing that in one
place, from a snapshot of the state, is what lets a test drive every order of
events through it and prove that it never returns a deadline in the past while
nothing is runnable (the loop would call ``Condition.wait(0)`` forever: a
memcached restart once left a worker spinning a core that way).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WakeState:
    """What the store thread's next wake-up depends on (monotonic times)."""

    closed: bool
    dirty: bool                 # something arrived that the store may lack
    retry_at: float | None      # a write failed: do not write again before this
    next_tick: float            # the refresh timer
    task_due: float | None      # the earliest task's due time
    notified: bool = False      # push: the backend says the data changed
    refresh_requested: bool = False


def next_wake(state: WakeState, now: float) -> float | None:
    """None when something is runnable now; else the time to wake at, always after ``now``.

    ``retry_at`` matters only while the state is dirty: once a write held
    everything (the refresh tick's own flush, say), a retry time left over
    from an earlier failure is ignored, never waited for.
    """
    if state.closed or state.notified or state.refresh_requested:
        return None
    wake = state.next_tick
    if state.task_due is not None:
        wake = min(wake, state.task_due)
    if state.dirty:
        wake = min(wake, state.retry_at if state.retry_at is not None else now)
    return None if wake <= now else wake
