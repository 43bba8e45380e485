"""What a fault costs while it lasts: worker CPU seconds and how long requests went unanswered.

A fault test that only checks the final state cannot see a worker spinning a
core or stalling its requests. Wrap the fault in ``measure_cost``::

    with measure_cost(cluster) as cost:
        ...fault happens, test waits...
    assert_cost(cost)                # a spin or a stall fails, a slow machine does not

``measure_cost`` samples each worker's CPU seconds (psutil, by pid) at start
and end, and keeps a few client threads asking the probe app (``/flags``) at
a steady pace. ``Cost.longest_wait`` is the longest a request went without an
answer (a request that failed counts for the time until it failed): the
workers share one listening socket, so which worker accepts is the kernel's
choice, and a stalled worker shows as a request it accepted and did not
answer. ``Cost.gaps`` is, per pid, the longest time between two of its answers:
a worker whose store thread spins a core starves its own request thread, so the
others accept in its place and its gap grows (4 s in 12 s, measured) while no
single request is slow. The kernel picks which worker accepts, so the gap bound
(``MAX_GAP``) is looser than the wait bound.

Bounds are structural: CPU within max(2x the idle rate, ``FLOOR_CPU_PER_SECOND``)
over the window, and no request unanswered for ``MAX_WAIT`` seconds. A spin
burns a whole core (about 1 CPU second per second); idling with the clients
asking costs a few hundredths.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

from fh_prefork.testing.cluster import Cluster

__all__ = ["FLOOR_CPU_PER_SECOND", "MAX_GAP", "MAX_WAIT", "Cost", "assert_cost", "measure_cost"]

#: CPU seconds per second a worker may use whatever its idle rate: 1.5 s per 10 s
FLOOR_CPU_PER_SECOND = 0.15
#: seconds a request may go unanswered: far above a loaded machine's request time
MAX_WAIT = 2.0
#: seconds a worker may go without answering any request while the clients keep asking
MAX_GAP = 3.0
#: seconds between one client's requests: enough to see a stall, cheap enough to not matter
CLIENT_INTERVAL = 0.05


@dataclass
class Cost:
    """One measured window; filled in by ``measure_cost`` when its block ends."""

    seconds: float = 0.0
    cpu: dict[int, float] = field(default_factory=dict)   # worker pid -> CPU seconds used
    longest_wait: float = 0.0          # the longest a request went without an answer
    slowest_pid: int | None = None     # the worker that answered it late (None: it failed)
    gaps: dict[int, float] = field(default_factory=dict)  # pid -> longest time between answers
    requests: int = 0
    failures: int = 0

    @property
    def max_cpu(self) -> float:
        return max(self.cpu.values(), default=0.0)

    def cpu_rate(self) -> float:
        """The busiest worker's CPU seconds per second of the window."""
        return self.max_cpu / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        cpu = ", ".join(f"{pid}: {s:.2f}" for pid, s in sorted(self.cpu.items()))
        gap = max(self.gaps.values(), default=0.0)
        return (f"{self.seconds:.1f} s window: worker CPU s {{{cpu}}}; longest unanswered "
                f"request {self.longest_wait:.2f} s; longest a worker answered nothing "
                f"{gap:.2f} s; {self.requests} requests, {self.failures} failed")


def _cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


class _Clients:
    """``n`` threads asking ``path`` every ``CLIENT_INTERVAL`` s until stopped."""

    def __init__(self, url: str, n: int) -> None:
        self._url = url
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.longest_wait = 0.0
        self.slowest_pid: int | None = None
        self.last_answer: dict[int, float] = {}
        self.gaps: dict[int, float] = {}
        self.requests = self.failures = 0
        self._threads = [threading.Thread(target=self._ask, daemon=True, name=f"cost-{i}")
                         for i in range(n)]

    def start(self, at: float) -> None:
        self._started = at
        for thread in self._threads:
            thread.start()

    def _ask(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            pid: int | None = None
            try:
                with urllib.request.urlopen(self._url, timeout=MAX_WAIT * 5) as resp:
                    pid = int(json.loads(resp.read())["pid"])
            except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
                pid = None      # a worker killed mid-answer (IncompleteRead) is a failure too
            now = time.monotonic()
            with self._lock:
                self.requests += 1
                if pid is None:
                    self.failures += 1
                if now - sent > self.longest_wait:
                    self.longest_wait, self.slowest_pid = now - sent, pid
                if pid is not None:
                    since = self.last_answer.get(pid, self._started)
                    self.gaps[pid] = max(self.gaps.get(pid, 0.0), now - since)
                    self.last_answer[pid] = now
            self._stop.wait(CLIENT_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=MAX_WAIT * 5 + 1)


@contextmanager
def measure_cost(cluster: Cluster, clients: int = 4, path: str = "/flags?key=FLAG"
                 ) -> Iterator[Cost]:
    """Measure the block: workers' CPU seconds (the pids alive at its start) and request waits.

    The yielded ``Cost`` is filled in when the block ends (also when it raises).
    A worker that died in the window is left out of ``cpu``.
    """
    cost = Cost()
    pids = cluster.worker_pids()
    before = {pid: _cpu_seconds(pid) for pid in pids}
    started = time.monotonic()
    asking = _Clients(cluster.url + path, clients)
    asking.start(started)
    try:
        yield cost
    finally:
        asking.stop()
        cost.seconds = time.monotonic() - started
        for pid in pids:
            first, last = before[pid], _cpu_seconds(pid)
            if first is not None and last is not None:
                cost.cpu[pid] = last - first
        cost.longest_wait, cost.slowest_pid = asking.longest_wait, asking.slowest_pid
        end = time.monotonic()
        # the time since a worker's last answer counts too, and a worker that never
        # answered went the whole window without (measure windows of several seconds)
        cost.gaps = {pid: max(asking.gaps.get(pid, 0.0), end - asking.last_answer.get(pid, started))
                     for pid in pids if pid in cost.cpu}
        cost.requests, cost.failures = asking.requests, asking.failures


def assert_cost(cost: Cost, idle: Cost | None = None, max_wait: float = MAX_WAIT,
                max_gap: float = MAX_GAP, floor: float = FLOOR_CPU_PER_SECOND) -> None:
    """Fail when a worker used more CPU than idling allows or a request waited too long.

    Allowed per worker: max(2 x ``idle``'s busiest rate, ``floor``) per second of the
    window. ``idle``: the same cluster measured with no fault, if at hand. ``floor``: a
    window that is busy by design (a history's events, kills and reconnects) may allow
    more, as long as it stays well under the whole core a spin burns.
    """
    print(f"cost: {cost.summary()}")
    rate = floor
    if idle is not None:
        rate = max(rate, 2 * idle.cpu_rate())
    allowed = rate * cost.seconds
    over = {pid: round(s, 2) for pid, s in cost.cpu.items() if s > allowed}
    assert not over, (f"worker(s) used more than {allowed:.2f} CPU s in {cost.seconds:.1f} s "
                      f"(a spin?): {over}; {cost.summary()}")
    assert cost.requests > 0, "no request was sent: the measurement saw nothing"
    assert cost.longest_wait < max_wait, (
        f"a request went {cost.longest_wait:.2f} s without an answer (worker "
        f"{cost.slowest_pid}; a stall?): {cost.summary()}")
    silent = {pid: round(gap, 2) for pid, gap in cost.gaps.items() if gap >= max_gap}
    assert not silent, (f"worker(s) answered no request for {max_gap} s or more while the "
                        f"clients kept asking (a stall?): {silent}; {cost.summary()}")
