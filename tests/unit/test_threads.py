"""fh_prefork.threads: library threads block the process's signals; their starter keeps its own."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from fh_prefork import threads
from fh_prefork.threads import (
    BLOCKED_SIGNALS,
    FAULT_SIGNALS,
    launch_without_signals,
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
        "from fh_prefork.threads import launch_without_signals, start_without_signals\n"
        "before = signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
        "def starter(start):\n"
        "    start(threading.Thread(target=gevent.sleep, args=(0.01,)))\n"
        "gevent.joinall([gevent.spawn(starter, start) for _ in range(3)\n"
        "                for start in (start_without_signals, launch_without_signals)],\n"
        "               timeout=5)\n"
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


class _HeldStart(threading.Thread):
    """A thread whose start waits until the test lets it go: the scheduler at its slowest."""

    def __init__(self, target: object = None) -> None:
        super().__init__(target=target, daemon=True)  # type: ignore[arg-type]
        self.go = threading.Event()
        self.start_called = threading.Event()

    def start(self) -> None:
        self.start_called.set()
        self.go.wait(10)
        super().start()


def test_a_launch_returns_before_the_thread_is_started_and_it_blocks_the_signals() -> None:
    seen: list[set[int]] = []
    thread = _HeldStart(target=lambda: seen.append(_mask()))
    before = _mask()
    started = time.monotonic()
    launch_without_signals(thread)
    returned_after = time.monotonic() - started
    assert thread.start_called.wait(5), "the helper starts it"
    assert not thread.is_alive() and not seen
    assert returned_after < 5, "a launch does not wait for the start (which waits 10 s)"
    thread.go.set()
    assert wait_for_end(thread, 5) and seen
    assert seen[0] >= BLOCKED_SIGNALS - UNBLOCKABLE and not seen[0] & FAULT_SIGNALS
    assert _mask() == before, "the launching thread's own mask is as it was"


def test_wait_for_end_waits_for_a_launch_still_under_way() -> None:
    """A close that comes before the helper started the thread still waits for its end:
    otherwise the store thread would close its connection after close() returned."""
    ran = threading.Event()
    thread = _HeldStart(target=ran.set)
    launch_without_signals(thread)
    assert thread.start_called.wait(5)
    assert not wait_for_end(thread, 0.05), "neither started nor ended: it outlived the wait"
    threading.Timer(0.1, thread.go.set).start()
    assert wait_for_end(thread, 5)
    assert ran.is_set(), "waited for the start, then for the end"


def test_a_launch_that_cannot_start_the_thread_says_so_at_error(
        caplog: pytest.LogCaptureFixture) -> None:
    class Unstartable(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    thread = Unstartable(name="fh-prefork-test", daemon=True)
    with caplog.at_level(logging.ERROR, logger="fh_prefork"):
        launch_without_signals(thread)
        assert wait_for_end(thread, 5), "nothing to wait for once the launch failed"
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "fh-prefork-test" in caplog.text and "can't start new thread" in caplog.text


def test_a_launch_failing_while_python_shuts_down_logs_nothing(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.12 refuses new threads from the start of its shutdown, before
    ``sys.is_finalizing()`` says so: a store left open at exit must not print an ERROR."""
    class Unstartable(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading, "_SHUTTING_DOWN", True, raising=False)
    failed: list[bool] = []
    with caplog.at_level(logging.DEBUG, logger="fh_prefork"):
        thread = Unstartable(daemon=True)
        launch_without_signals(thread, failed=lambda: failed.append(True))
        assert wait_for_end(thread, 5)
    assert not caplog.records and not failed


STORM = """
import signal, sys, threading, time
from fh_prefork import threads

class Raised(Exception):
    pass

armed = False
def handler(signum, frame):
    if armed:
        raise Raised()

signal.signal(signal.SIGALRM, handler)
interrupted, launches, bad_masks = [], 0, 0
signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    thread = threading.Thread(target=lambda: None, daemon=True)
    launches += 1
    try:
        armed = True
        threads.launch_without_signals(thread)
        armed = False
    except Raised:
        armed = False
        interrupted.append(thread)
    bad_masks += bool(signal.pthread_sigmask(signal.SIG_BLOCK, []))
signal.setitimer(signal.ITIMER_REAL, 0, 0)
signal.signal(signal.SIGALRM, signal.SIG_IGN)
settled = time.monotonic() + 5     # every helper made has ended its launch by then
while threads._launches and time.monotonic() < settled:
    time.sleep(0.01)
never_ran = [thread for thread in interrupted if thread.ident is None][:20]
started = time.monotonic()
waits = [threads.wait_for_end(thread, 0.5) for thread in never_ran]
print(launches, len(interrupted), bad_masks, len(threads._launches), waits.count(False),
      round(time.monotonic() - started, 2))
"""


def test_a_signal_handler_raising_during_launches_leaves_no_launch_to_wait_for() -> None:
    """A handler runs (and may raise: KeyboardInterrupt, gunicorn's SystemExit) at each mask
    change. Raised before the helper exists, the launch must leave no record that a close
    would wait on for its whole timeout (it did, in 2-5% of interrupted launches)."""
    done = subprocess.run([sys.executable, "-c", STORM, "2"], capture_output=True, text=True,
                          timeout=120, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    launches, interrupted, bad_masks, left, outlived, waited = done.stdout.split()
    assert int(interrupted) > 100, f"the storm interrupted too few launches: {done.stdout}"
    assert int(bad_masks) == 0, "the launching thread kept signals blocked"
    assert int(left) == 0 and int(outlived) == 0, f"launches left waiting: {done.stdout}"
    assert float(waited) < 0.5, "a close would have waited for a launch that never happened"


def test_a_handlers_runtime_error_after_the_helper_is_made_keeps_the_launch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.13 runs signal handlers right after ``_thread.start_new_thread`` returns. A
    handler raising RuntimeError there is not the call failing: the helper exists and will
    start the thread, so ``wait_for_end`` must still wait for it."""
    import _thread
    import types

    def handler_raises() -> None:
        raise RuntimeError("raised by a signal handler")

    def made_then_interrupted(function: Callable[[], object], args: tuple[()]) -> int:
        ident = _thread.start_new_thread(function, args)
        handler_raises()
        return ident

    monkeypatch.setattr(threads, "_thread",
                        types.SimpleNamespace(start_new_thread=made_then_interrupted))
    ran = threading.Event()
    thread = _HeldStart(target=ran.set)
    with pytest.raises(RuntimeError, match="signal handler"):
        launch_without_signals(thread)
    assert thread.start_called.wait(5)
    assert not wait_for_end(thread, 0.05), "the launch is under way: not ended"
    thread.go.set()
    assert wait_for_end(thread, 5) and ran.is_set()


NO_ROOM = """
import resource, threading
from fh_prefork import threads
stack = 512 << 20
threading.stack_size(stack)
size = int([line for line in open("/proc/self/status")
            if line.startswith("VmSize")][0].split()[1]) << 10
resource.setrlimit(resource.RLIMIT_AS, (size + stack // 2, resource.RLIM_INFINITY))
thread = threading.Thread(target=lambda: None, daemon=True)
try:
    threads.launch_without_signals(thread)
except RuntimeError as err:
    print("refused", len(threads._launches), threads.wait_for_end(thread, 5))
"""


def test_a_launch_when_no_thread_can_be_made_raises_and_leaves_nothing_to_wait_for() -> None:
    """No room for even the helper (address space for a stack): the caller gets the error,
    as from ``Thread.start``, and no launch is left for a close to wait on."""
    done = subprocess.run([sys.executable, "-c", NO_ROOM], capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.stdout.split() == ["refused", "0", "True"], done.stdout + done.stderr
