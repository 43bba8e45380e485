"""The Edge simulator as people trying the library use it: its CLI, its HTTP control API.

Before: ``{"key": "NEW_CHECKOUT", "value": false}`` answered ``{"ok": true}`` and installed a
malformed feature every worker ignored; a restarted simulator began at version 1 again, below
what the store kept, so workers ignored it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fh_prefork.testing.cluster import Cluster
from tests.support.procs import free_port, kill_tree, port_open, wait_for

StartCluster = Callable[..., Cluster]


class SimulatorProcess:
    """``python -m fh_prefork.testing.edge_simulator`` on a fixed port, restartable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> SimulatorProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "fh_prefork.testing.edge_simulator",
                                      "--port", str(self.port), "--keepalive", "1", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), 10, what="the simulator to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)
            self.proc = None

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/_sim/{path}",
                                         data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


@pytest.fixture
def sim() -> Iterator[SimulatorProcess]:
    process = SimulatorProcess(free_port())
    yield process
    process.stop()


def served(cluster: Cluster) -> set[tuple[Any, Any]]:
    return {(f["NEW_CHECKOUT"]["value"], f["NEW_CHECKOUT"]["version"])
            for f in cluster.flags("NEW_CHECKOUT").values()}


MALFORMED: list[tuple[Any, str]] = [
    ({"key": "NEW_CHECKOUT", "value": "yes"}, "must be a boolean"),  # wrong type for it
    ({"value": True}, "'key'"),
    ([{"key": "NEW_CHECKOUT", "value": False}], "JSON object"),
    ({"key": "NEW", "id": "n", "version": "two", "type": "BOOLEAN", "value": True}, "version"),
    ({"key": "NEW", "value": None}, "infer"),
]


def test_short_form_malformed_requests_and_a_restart(
        start_cluster: StartCluster, sim: SimulatorProcess, tmp_path: Path) -> None:
    sim.start("--feature", "NEW_CHECKOUT=true")
    cluster = start_cluster("gunicorn", 2, env={
        "FEATUREHUB_EDGE_URL": f"http://127.0.0.1:{sim.port}",
        "FH_PREFORK_STORE": f"file://{tmp_path}/store"})
    def one_state() -> tuple[Any, Any] | None:
        states = served(cluster)
        return states.pop() if len(states) == 1 else None

    first = wait_for(one_state, 10, what="the first state")
    assert first[0] is True and first[1] > 1_600_000_000_000  # a clock version

    status, answer = sim.post("feature", {"key": "NEW_CHECKOUT", "value": False})
    assert status == 200 and answer["ok"] is True, answer
    assert answer["feature"]["type"] == "BOOLEAN" and answer["feature"]["version"] > first[1]
    flipped = (False, answer["feature"]["version"])
    wait_for(lambda: served(cluster) == {flipped}, 5, what="the short-form flip in every worker")

    for body, reason in MALFORMED:
        status, answer = sim.post("feature", body)
        assert status == 400 and reason in answer["error"], (body, answer)
    status, answer = sim.post("feature", raw=b"{not json")
    assert status == 400, answer
    status, answer = sim.post("features", {"key": "NEW_CHECKOUT"})
    assert status == 400 and "array" in answer["error"], answer
    status, answer = sim.post("delete", {"key": "NOPE"})
    assert status == 404, answer
    assert served(cluster) == {flipped}

    # a restarted simulator starts above what the store kept: the workers take its state
    sim.stop()
    sim.start("--feature", "NEW_CHECKOUT=true")
    wait_for(lambda: {v for v, _ in served(cluster)} == {True}, 10,
             what="the restarted simulator's state in every worker")


def test_a_delay_starts_every_edge_answer_late(sim: SimulatorProcess) -> None:
    sim.start("--feature", "NEW_CHECKOUT=true")
    url = f"http://127.0.0.1:{sim.port}/features?apiKey=p/env/c*s"

    def answer_time() -> float:
        started = time.monotonic()
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
        return time.monotonic() - started

    status, answer = sim.post("delay?seconds=0.4")
    assert status == 200, answer
    assert answer_time() >= 0.4          # a lower bound: load only makes it later
    status, answer = sim.post("delay?seconds=0")
    assert status == 200, answer
    for junk in ("soon", "inf", "nan", "-1"):
        status, answer = sim.post(f"delay?seconds={junk}")
        assert status == 400, (junk, answer)
