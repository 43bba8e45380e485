"""``fh-prefork demo``: a flag change pushed to ONE worker reaches every worker through the store.

Starts a local Edge simulator (in this process), a real gunicorn master with N
workers running the probe app on the embedded file store in a fresh temporary
folder (no memcached), then flips ``NEW_CHECKOUT`` on a timer by sending the
update on one worker's Edge stream only, and shows each worker's pid, value
and version live until all of them agree, and how long that took.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import psutil

from ..testing.cluster import Cluster
from ..testing.edge_simulator import EdgeSimulator, make_feature

FLAG = "NEW_CHECKOUT"
API_KEY = "demo/demo-env/demo-client*demo-secret"
AGREE_TIMEOUT = 30.0


class _Stop(Exception):
    """SIGINT or SIGTERM: leave the loop and clean up."""


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    def on_signal(signum: int, frame: Any) -> None:
        # one signal is enough: ignore the next ones so the cleanup cannot be cut short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)  # during cleanup; restored by the caller


class _View:
    """A small live table: redrawn with ANSI on a terminal, one line per change otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.drawn = 0
        self.seen: dict[int, tuple[Any, int | None]] = {}

    def say(self, line: str) -> None:
        if self.tty and self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0
        self.out.write(line + "\n")
        self.out.flush()

    def show(self, states: dict[int, tuple[Any, int | None]], target: int, started: float,
             direct_pid: int | None, now: float) -> None:
        if not self.tty:
            for pid, state in sorted(states.items()):
                if self.seen.get(pid) != state:
                    how = " (from its Edge stream)" if pid == direct_pid else ""
                    self.out.write(f"  +{now - started:6.3f} s  worker {pid}: {FLAG}="
                                   f"{state[0]} v{state[1]}{how}\n")
            self.seen = dict(states)
            self.out.flush()
            return
        lines = [f"  {'WORKER':>8}  {'VALUE':<6} {'VERSION':>7}  AGREE   (+{now - started:.2f} s)"]
        for pid, (value, version) in sorted(states.items()):
            ok = "yes" if version == target else "..."
            how = "  <- got it from Edge" if pid == direct_pid else ""
            colour = "\x1b[32m" if version == target else "\x1b[33m"
            lines.append(f"  {pid:>8}  {colour}{str(value):<6} {str(version):>7}  {ok:<5}"
                         f"\x1b[0m{how}")
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)

    def keep(self) -> None:
        """Leave the current table on screen; later output goes below it."""
        self.drawn = 0
        self.seen = {}


def _stream_owner(cluster: Cluster, peer_port: int) -> int | None:
    """The worker whose Edge connection uses local port ``peer_port`` (best effort)."""
    for pid in cluster.worker_pids():
        try:
            proc = psutil.Process(pid)
            conns = proc.net_connections("tcp") if hasattr(proc, "net_connections") \
                else proc.connections("tcp")
        except (psutil.Error, OSError):
            continue
        if any(c.laddr and c.laddr[1] == peer_port for c in conns):
            return pid
    return None


def _watch(cluster: Cluster, view: _View, target: int, started: float,
           direct_pid: int | None, timeout: float) -> float | None:
    """Ask workers until every live one serves ``target``; seconds it took, None on timeout."""
    states: dict[int, tuple[Any, int | None]] = {}
    deadline = time.monotonic() + timeout
    agreed_at: float | None = None
    while time.monotonic() < deadline:
        try:
            answer = cluster.get(f"/flags?key={FLAG}", timeout=2)
        except (OSError, ValueError, urllib.error.URLError):
            continue  # a worker restarting; bounded by the deadline
        now = time.monotonic()
        flag = answer["flags"][FLAG]
        states[int(answer["pid"])] = (flag["value"], flag["version"])
        live = set(cluster.worker_pids())
        for gone in set(states) - live:
            del states[gone]
        view.show(states, target, started, direct_pid, now)
        if live and live <= set(states) and all(states[p][1] == target for p in live):
            agreed_at = now
            break
    return None if agreed_at is None else agreed_at - started


def run_demo(workers: int = 4, interval: float = 3.0, flips: int | None = None,
             refresh: float = 0.5, server: str = "gunicorn", out: TextIO | None = None) -> int:
    out = out or sys.stdout
    view = _View(out, out.isatty())
    folder = tempfile.mkdtemp(prefix="fh-prefork-demo-")
    store = f"file://{folder}/store"
    edge = EdgeSimulator(keepalive_interval=1.0)
    cluster: Cluster | None = None
    times: list[float] = []
    old_handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _stop_on_signals():
            edge.start()
            value, version = False, 1
            edge.set_features([make_feature(FLAG, value, version)])
            env = {"FEATUREHUB_EDGE_URL": edge.url, "FEATUREHUB_API_KEY": API_KEY,
                   "FH_PREFORK_STORE": store, "FH_PREFORK_REFRESH_SECONDS": str(refresh),
                   "FH_PREFORK_EDGE_BACKOFF_MAX": "2"}
            view.say(f"fh-prefork demo: Edge simulator on {edge.url}, embedded store {store}")
            view.say(f"starting {server} with {workers} workers (store refresh every "
                     f"{refresh:g} s) ...")
            cluster = Cluster(server, workers, env, log_dir=folder)
            cluster.start(timeout=90)
            if not edge.wait_for_streams(workers, 30):
                view.say(f"warning: only {edge.open_streams} of {workers} workers connected "
                         "to Edge")
            view.say(f"{server} master {cluster.master_pid}, workers "
                     f"{', '.join(map(str, cluster.worker_pids()))}. "
                     f"Flipping {FLAG} every {interval:g} s"
                     + (f", {flips} times." if flips else "; Ctrl-C to stop."))
            took = _watch(cluster, view, version, time.monotonic(), None, AGREE_TIMEOUT)
            view.keep()
            done = 0
            while flips is None or done < flips:
                flip_started = time.monotonic()
                value, version = not value, version + 1
                streams = edge.streams()
                if not streams:
                    view.say("no worker is connected to Edge; waiting ...")
                    edge.wait_for_streams(1, interval)
                    continue
                stream = streams[0]
                direct = _stream_owner(cluster, stream.peer[1])
                view.say("")
                view.say(f"flip {done + 1}: {FLAG} -> {value} (v{version}), sent on the Edge "
                         f"stream of worker {direct or '?'} only")
                edge.push_feature(make_feature(FLAG, value, version), stream_id=stream.id)
                took = _watch(cluster, view, version, flip_started, direct, AGREE_TIMEOUT)
                view.keep()
                if took is None:
                    view.say(f"flip {done + 1}: workers did not agree within {AGREE_TIMEOUT:g} s")
                else:
                    times.append(took)
                    view.say(f"flip {done + 1}: all {len(cluster.worker_pids())} workers agree on "
                             f"{FLAG}={value} v{version} after {took:.2f} s")
                done += 1
                if flips is not None and done >= flips:
                    break
                remaining = interval - (time.monotonic() - flip_started)
                deadline = time.monotonic() + max(0.0, remaining)
                while time.monotonic() < deadline:  # sleeps in slices: Ctrl-C stays prompt
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    except _Stop:
        view.say("")
        view.say("stopping ...")
    except (RuntimeError, TimeoutError) as err:
        view.say(f"fh-prefork demo failed: {err}")
        if cluster is not None:
            view.say(cluster.log_text()[-2000:])
        _cleanup(cluster, edge, folder)
        _restore(old_handlers)
        return 1
    _cleanup(cluster, edge, folder)
    _restore(old_handlers)
    if times:
        view.say(f"{len(times)} flip(s): every worker agreed after "
                 f"{statistics.median(times):.2f} s median, {max(times):.2f} s at worst "
                 f"(refresh period {refresh:g} s). Everything stopped.")
    else:
        view.say("Everything stopped.")
    return 0


def _cleanup(cluster: Cluster | None, edge: EdgeSimulator, folder: str) -> None:
    if cluster is not None:
        cluster.stop()
    edge.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _restore(handlers: dict[Any, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_demo(flips=int(os.environ.get("FLIPS", "0")) or None))
