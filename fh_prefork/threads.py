"""The library's background threads, which leave the process's signals to its main thread.

A signal sent to a process goes to one of its threads that does not block it: the main
thread, unless that one already has a signal pending; then any other. uWSGI handles a
worker's signals in C, in whichever thread receives them: SIGINT ends the worker there,
through its exit hooks. In one of our threads that hung the worker until the master
killed it after ``worker-reload-mercy`` (10 s and more): the exit hook closes the store,
whose thread cannot wait for itself. gunicorn and Python run their handlers on the main
thread alone, so blocking the signals elsewhere changes nothing for them.

So every thread of ours starts with the standard signals blocked (it inherits the
mask of the thread that starts it, set for that moment), and a signal sent to the
worker always reaches the main thread, as the servers expect. A fault's own signal
(SIGSEGV and the like) still reaches the thread that faulted.

A process started on one of these threads (by a feature listener the application
registered, say) inherits the mask: give it a ``preexec_fn`` that unblocks what it
needs (``signal.pthread_sigmask(signal.SIG_UNBLOCK, ...)``), or start it elsewhere.

The threads a worker's start makes are launched (:func:`launch_without_signals`), not
started: ``Thread.start`` waits until the new thread has run, about 0.1 ms on an idle
host and a scheduler's whim on one where every worker starts at once, and the
post-fork hook has better things to do than wait for the scheduler.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Raised by a fault in the thread that faulted: never blocked (blocking them is undefined).
FAULT_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                           signal.SIGTRAP, signal.SIGSYS})
#: Every other standard signal: the main thread's (SIGKILL and SIGSTOP cannot be blocked
#: anyway). Real-time signals are left alone: no server sends them, and blocking them too
#: made each thread start about 50 µs slower on the benchmark VM (these 25: about 10 µs).
BLOCKED_SIGNALS = frozenset(s for s in signal.valid_signals()
                            if s < getattr(signal, "SIGRTMIN", signal.NSIG)) - FAULT_SIGNALS


def start_without_signals(thread: threading.Thread) -> None:
    """Start ``thread`` with the standard signals but a fault's blocked in it, from its first
    instruction: it inherits this thread's mask, which is set so for that moment only.

    Once gevent or eventlet has patched ``threading`` (a green gunicorn worker: see
    fh_prefork.green), threads are greenlets on the one native thread, which must go on
    receiving every signal: the mask is left alone. (Set and restored around each
    start, it was lost when two greenlets' starts interleaved, and the worker never saw
    SIGTERM again.)
    """
    if _green():
        thread.start()
        return
    with _signals_blocked():
        thread.start()


def launch_without_signals(thread: threading.Thread,
                           failed: Callable[[], None] | None = None) -> None:
    """:func:`start_without_signals` without waiting for ``thread`` to run: a short-lived
    helper thread (itself without signals) starts it, and this call returns at once.

    Until then ``thread.is_alive()`` is False; :func:`wait_for_end` waits for the launch
    first, so a close that comes early still waits for the thread's end. A start that fails
    there (no room for one more thread) is logged at ERROR, since nothing else would see
    it, and ``failed`` is called on the helper. Under gevent or eventlet the helper is a
    greenlet, spawned without a switch between setting the mask and restoring it, so the
    one native thread's mask is kept.
    """
    launched = threading.Event()
    entry = (os.getpid(), launched)

    def launch() -> None:
        try:
            thread.start()
        except BaseException:
            if not _exiting():     # a process exiting has no use for the thread anyway
                logging.getLogger("fh_prefork").error(
                    "fh_prefork: could not start thread %s; what it does will not happen in "
                    "process %d", thread.name, os.getpid(), exc_info=True)
                if failed is not None:
                    failed()
        finally:
            _launches.pop(thread, None)
            launched.set()

    with _signals_blocked():
        # recorded only once the signals are blocked: a handler raising at the mask change
        # must not leave a launch that no helper will ever end
        _launches[thread] = entry
        try:
            _thread.start_new_thread(launch, ())
        except RuntimeError as err:
            # raised by the call itself: no helper was made. One raised by a signal handler
            # once the call returned (Python 3.13 runs them there) has the handler's frame
            # below this one, and the helper exists and will end the launch itself.
            if err.__traceback__ is not None and err.__traceback__.tb_next is None:
                _launches.pop(thread, None)
            raise


@contextmanager
def _signals_blocked() -> Iterator[None]:
    """:data:`BLOCKED_SIGNALS` blocked in this thread while inside, so a thread started
    there inherits them; the mask as it was afterwards. Read first, block inside the try:
    a Python handler runs right after each mask change and may raise (KeyboardInterrupt),
    which must not leave this thread blocking signals."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_SIGNALS)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exiting() -> bool:
    """Whether the interpreter is on its way out. Python 3.12 refuses new threads from the
    start of its shutdown, before ``sys.is_finalizing()`` says so; ``threading`` marks that
    moment (a private flag, read defensively)."""
    return sys.is_finalizing() or bool(getattr(threading, "_SHUTTING_DOWN", False))


#: Threads being launched, with the launching process (a fork copies the entry, not the
#: helper that would end it) and the event the helper sets when the start is done. No lock:
#: each use is one dict operation, atomic in CPython, and a lock could be copied held into
#: a child forked at that moment.
_launches: dict[threading.Thread, tuple[int, threading.Event]] = {}


def _green() -> bool:
    """Whether ``threading`` makes greenlets here: gevent's or eventlet's monkey patch."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return True
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    return eventlet_patcher is not None and bool(eventlet_patcher.is_monkey_patched("thread"))


def wait_for_end(thread: threading.Thread | None, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``thread`` to end; False only when it outlived the wait.

    Not waited for, and True: no thread, one never started (a signal can interrupt its
    start) or already ended, and the caller itself (a close run on the thread it closes).
    A thread still being launched (:func:`launch_without_signals`) is waited for.
    """
    if thread is None or thread is threading.current_thread():
        return True
    deadline = time.monotonic() + timeout
    pid, launched = _launches.get(thread, (None, None))
    if launched is not None and pid == os.getpid() and not launched.wait(timeout):
        return False
    if not thread.is_alive():
        return True
    thread.join(max(0.0, deadline - time.monotonic()))
    return not thread.is_alive()
