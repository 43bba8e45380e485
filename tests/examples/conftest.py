"""Start an example with its real server against the Edge simulator and the embedded store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.edge import serve_edge
from tests.support.procs import free_port, kill_tree, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
API_KEY = "portfolio/env-examples/client*secret"


@pytest.fixture
def edge() -> Iterator[EdgeSimulator]:
    yield from serve_edge([make_feature("NEW_CHECKOUT", True, 7)], keepalive_interval=1.0)


@pytest.fixture
def example_env(edge: EdgeSimulator, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FEATUREHUB_EDGE_URL": edge.url,
        "FEATUREHUB_API_KEY": API_KEY,
        "FH_PREFORK_STORE": f"file://{tmp_path}/store",
        "FH_PREFORK_REFRESH_SECONDS": "0.5",
        "WEB_CONCURRENCY": "2",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def serving(self, path: str, predicate: Callable[[Any], bool], timeout: float = 60) -> Any:
        """Ask ``path`` until the answer satisfies ``predicate`` (the flag arrived)."""
        def answer() -> Any:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n"
                                     f"{self.log_text()}")
            try:
                body = get_json(self.url + path)
            except (OSError, ValueError, urllib.error.URLError):
                return None
            return body if predicate(body) else None

        try:
            return wait_for(answer, timeout, interval=0.1, what=f"{path} on {self.url}")
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- server log ---\n{self.log_text()}") from None


@pytest.fixture
def start_server(example_env: dict[str, str], tmp_path: Path
                 ) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(args: list[str], cwd: Path, port: int | None = None) -> Server:
        port = port or free_port()
        log = tmp_path / f"server-{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([a.replace("{port}", str(port)) for a in args], cwd=cwd,
                                    env={**example_env, "BIND": f"127.0.0.1:{port}"},
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        server = Server(proc, port, log)
        started.append(server)
        return server

    yield start
    for server in started:
        kill_tree(server.proc.pid)
        try:
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
