"""A real prefork server (gunicorn or uWSGI) running the probe app, driven from outside.

Shared by the demo, the benchmark and the test suite, so all three watch the
same thing: a real master forking real workers. Every process started here is
stopped by pid, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

APP = "fh_prefork.testing.probe_app:application"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy; raise TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def kill_tree(pid: int, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
    """Signal a process and every descendant by pid, then reap what we can."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout)


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (pip install 'fh-prefork[{name}]')")
    return found


class Cluster:
    """One master and its workers, serving the probe app on a loopback port."""

    def __init__(self, kind: str, workers: int, env: Mapping[str, str | None], *,
                 args: Sequence[str] = (), app: str = APP, port: int | None = None,
                 log_dir: str | None = None) -> None:
        if kind not in ("gunicorn", "uwsgi"):
            raise ValueError(f"unknown server {kind!r}")
        self.kind = kind
        self.workers = workers
        merged = {**os.environ, **env}  # None unsets a variable
        self.env = {k: v for k, v in merged.items() if v is not None}
        self.args = list(args)
        self.app = app
        self.port = port or free_port()
        self._log_dir = log_dir or tempfile.mkdtemp(prefix=f"fh-{kind}-")
        self.log_path = Path(self._log_dir) / f"{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "gunicorn":
            return [_bin("gunicorn"), "-c", "python:fh_prefork.testing.gunicorn_conf",
                    "-w", str(self.workers), "-b", f"127.0.0.1:{self.port}",
                    "--graceful-timeout", "10", *self.args, self.app]
        module, _, callable_ = self.app.partition(":")
        return [_bin("uwsgi"), "--master", "--processes", str(self.workers),
                "--http-socket", f"127.0.0.1:{self.port}", "--module",
                f"{module}:{callable_ or 'application'}", "--need-app", "--die-on-term",
                "--worker-reload-mercy", "10", "--reload-mercy", "10", "--disable-logging",
                "--import", "fh_prefork.uwsgi", *self.args]

    def start(self, timeout: float = 30.0) -> Cluster:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            wait_until(lambda: self.proc is not None and (self.proc.poll() is not None or (
                len(self.worker_pids()) >= self.workers and self._answers())),
                timeout, f"{self.kind} to start {self.workers} workers")
        except TimeoutError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n"
                               f"{self.log_text()[-3000:]}")
        return self

    @property
    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        try:
            return sorted(c.pid for c in psutil.Process(self.master_pid).children()
                          if c.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return []

    def get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def _answers(self) -> bool:
        try:
            return bool(self.get("/ping", timeout=2) == "ok")
        except (OSError, ValueError):
            return False

    def sample(self, path: str, timeout: float = 20.0,
               pids: Sequence[int] | None = None) -> dict[int, Any]:
        """Ask until every worker (or every pid in ``pids``) has answered ``path`` once."""
        wanted = set(pids if pids is not None else self.worker_pids())
        seen: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while not wanted <= set(seen):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"workers {sorted(wanted - set(seen))} did not answer "
                                   f"{path} within {timeout} s")
            try:
                answer = self.get(path, timeout=2)
            except (OSError, ValueError):
                time.sleep(0.02)  # a worker restarting; the loop is bounded by the deadline
                continue
            pid = int(answer["pid"]) if isinstance(answer, dict) else -1
            seen[pid] = answer
        return {pid: seen[pid] for pid in wanted}

    def flags(self, *keys: str, timeout: float = 20.0) -> dict[int, dict[str, Any]]:
        query = "&".join(f"key={k}" for k in keys)
        return {pid: answer["flags"]
                for pid, answer in self.sample(f"/flags?{query}", timeout).items()}

    def statuses(self, timeout: float = 20.0) -> dict[int, dict[str, Any]]:
        return self.sample("/status", timeout)

    def send(self, sig: int) -> None:
        """Signal the master (SIGHUP reloads, SIGTERM stops)."""
        os.kill(self.master_pid, sig)

    def kill_worker(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> float:
        """Stop gracefully; kill whatever is left by pid. Returns the seconds it took."""
        if self.proc is None:
            return 0.0
        started = time.monotonic()
        pids = [self.master_pid, *self.worker_pids()]
        if self.kind == "uwsgi" and sig == signal.SIGTERM:
            sig = signal.SIGINT  # uWSGI reloads on SIGTERM unless --die-on-term; be explicit
        try:
            os.kill(self.master_pid, sig)
            self.proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        took = time.monotonic() - started
        kill_tree(self.master_pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        return took

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
