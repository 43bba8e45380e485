"""fh_prefork.threads: library threads block the process's signals; their starter keeps its own."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from fh_prefork.threads import (
    BLOCKED_SIGNALS,
    FAULT_SIGNALS,
    start_without_signals,
    wait_for_end,
)

UNBLOCKABLE = {signal.SIGKILL, signal.SIGSTOP}


def _mask() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_a_thread_started_so_blocks_every_signal_but_a_fault() -> None:
    seen: list[set[int]] = []
    before = _mask()
    thread = threading.Thread(target=lambda: seen.append(_mask()), daemon=True)
    start_without_signals(thread)
    thread.join(5)
    assert seen and seen[0] >= BLOCKED_SIGNALS - UNBLOCKABLE
    assert not seen[0] & FAULT_SIGNALS
    assert {signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP} <= seen[0]
    assert _mask() == before, "the starting thread's own mask is as it was"


def test_the_starter_gets_its_mask_back_when_the_start_fails() -> None:
    thread = threading.Thread(target=lambda: None, daemon=True)
    before = _mask()
    start_without_signals(thread)
    thread.join(5)
    with pytest.raises(RuntimeError):
        start_without_signals(thread)   # a thread starts once
    assert _mask() == before


def test_under_gevent_the_native_threads_mask_is_left_alone() -> None:
    """Greenlets share the native thread: masks saved and restored around two interleaved
    starts left it blocking every signal (a gevent worker then never saw SIGTERM)."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import gevent, signal, threading\n"
        "from fh_prefork.threads import start_without_signals\n"
        "before = signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
        "def starter():\n"
        "    start_without_signals(threading.Thread(target=gevent.sleep, args=(0.01,)))\n"
        "gevent.joinall([gevent.spawn(starter) for _ in range(3)], timeout=5)\n"
        "after = signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
        "assert after == before, sorted(after - before)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_wait_for_end_never_waits_on_an_unstarted_thread_or_itself() -> None:
    unstarted = threading.Thread(target=lambda: None, daemon=True)
    assert wait_for_end(unstarted, 5) and wait_for_end(None, 5)
    seen: list[bool] = []
    itself = threading.Thread(target=lambda: seen.append(wait_for_end(itself, 5)), daemon=True)
    start_without_signals(itself)
    itself.join(5)
    assert seen == [True]
    release = threading.Event()
    busy = threading.Thread(target=release.wait, args=(5,), daemon=True)
    start_without_signals(busy)
    assert not wait_for_end(busy, 0.05), "it outlived the wait"
    release.set()
    assert wait_for_end(busy, 5)
