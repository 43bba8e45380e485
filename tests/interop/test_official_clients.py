"""The official FeatureHub clients against the Edge simulator: its wire format is Edge's.

The simulator's defaults follow the Edge server's source (``tests/edge/test_conformance.py``
names the files); here the official SDKs, which were written against the real Edge, read it:

* the Python ``featurehub-sdk`` (its ``FeatureHubConfig`` with its own SSE client, and its
  polling client);
* the JavaScript SDK from npm (``featurehub-javascript-node-sdk`` 1.4.0, installed in
  ``tests/interop/node_sdk`` on first use; ``watch.mjs`` prints what its repository holds),
  over SSE and polling.

Each receives the features, an update, a delete as Edge sends it (version 0, no value) and a
retired feature (``delete_feature`` at its real version), and an unretired one back.

Recorded (what each does with a version-0 delete): the JavaScript SDK deletes it
(``client_feature_repository.ts`` deletes at version 0, missing, or >= held); the Python
SDK deletes every ``delete_feature`` whatever its version (``featurehub_repository.py``
``_delete_feature``). Neither rejects the shape. Polling carries no ``delete_feature``: the JS
poller deletes what a list lacks, the Python poller never does (a deleted or retired
feature stays served by it; checked below as it is).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from featurehub_sdk.featurehub_config import FeatureHubConfig

from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.procs import kill_tree, wait_for

# runs node and npm, and the SDKs' own threads; one xdist worker runs them all, so one npm
# install at a time writes node_modules while no node reads it
pytestmark = [pytest.mark.servers, pytest.mark.xdist_group("node_sdk")]

NODE_DIR = Path(__file__).parent / "node_sdk"
KEY = "portfolio/env-sdk/client*secret"
#: key -> (version, value) a client holds
Held = dict[str, tuple[int, Any]]


def initial() -> list[dict[str, Any]]:
    return [make_feature("FLAG", True, 3), make_feature("COLOUR", "blue", 2, type="STRING"),
            make_feature("GONE", True, 5), make_feature("OLD", False, 7)]


@pytest.fixture
def edge() -> Iterator[EdgeSimulator]:
    """Edge's defaults, with a short drop time so reconnects happen during the test."""
    with EdgeSimulator([KEY], drop_after=2.0) as sim:
        sim.set_features(initial())
        yield sim


def script(edge: EdgeSimulator, held: Callable[[], Held], absence_deletes: bool = True) -> None:
    """Drive Edge through the changes and wait, bounded, for the client to show each.

    ``absence_deletes=False``: a client that never deletes a feature a list lacks (the
    Python SDK's poller: polling has no ``delete_feature``, it keeps what it had)."""
    def shows(expected: Held, what: str) -> None:
        last: list[Held] = []

        def now() -> bool:
            last[:] = [held()]
            return last[0] == expected
        try:
            wait_for(now, 20, interval=0.05, what=what)
        except AssertionError as err:
            raise AssertionError(f"{err}: client holds {last}, expected {expected}") from None

    shows({"FLAG": (3, True), "COLOUR": (2, "blue"), "GONE": (5, True), "OLD": (7, False)},
          "the initial list")
    edge.push_feature(make_feature("FLAG", False, 4))
    shows({"FLAG": (4, False), "COLOUR": (2, "blue"), "GONE": (5, True), "OLD": (7, False)},
          "an update")
    edge.delete_feature({"key": "GONE"})          # version 0, no value: Edge's delete
    kept: Held = {} if absence_deletes else {"GONE": (5, True)}
    shows({"FLAG": (4, False), "COLOUR": (2, "blue"), "OLD": (7, False), **kept},
          "a version-0 delete")
    edge.retire_feature("OLD")                    # delete_feature at version 8, with value
    if not absence_deletes:
        kept["OLD"] = (7, False)
    shows({"FLAG": (4, False), "COLOUR": (2, "blue"), **kept}, "a retired feature")
    kept.pop("OLD", None)
    edge.unretire_feature("OLD")                  # feature at version 9
    shows({"FLAG": (4, False), "COLOUR": (2, "blue"), "OLD": (9, False), **kept},
          "an unretired feature")
    edge.push_feature(make_feature("COLOUR", "green", 3, type="STRING"))
    shows({"FLAG": (4, False), "COLOUR": (3, "green"), "OLD": (9, False), **kept},
          "a string update")


def python_held(config: FeatureHubConfig) -> Held:
    repo = config.repository()
    return {key: (holder.get_version, holder.get_value)
            for key, holder in list(repo.features.items()) if holder.exists}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # its close
@pytest.mark.parametrize("mode", ["sse", "poll"])
def test_python_sdk_reads_the_simulator(edge: EdgeSimulator, mode: str) -> None:
    config = FeatureHubConfig(edge.url, [KEY])
    if mode == "poll":
        config.use_polling_edge_service(1)        # seconds: its shortest
    try:
        asyncio.run(config.init())
        script(edge, lambda: python_held(config), absence_deletes=mode == "sse")
    finally:
        config.close()
    if mode == "sse":
        assert edge.total_stream_requests >= 1 and edge.total_poll_requests == 0
    else:
        assert edge.total_poll_requests >= 2 and edge.total_stream_requests == 0


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """The official JavaScript SDK installed in tests/interop/node_sdk (npm on first use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the JavaScript SDK interop tests")
    # another test process (an xdist worker, a second run) may be installing it right now
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (NODE_DIR / "node_modules" / "featurehub-javascript-node-sdk").is_dir():
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR / "watch.mjs"


class NodeWatcher:
    """``node watch.mjs``: the latest line it printed is what its repository holds."""

    def __init__(self, driver: Path, url: str, mode: str) -> None:
        self.proc = subprocess.Popen(["node", str(driver), url, KEY, mode],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.latest: dict[str, Any] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def held(self) -> Held:
        while True:
            try:
                self.latest = json.loads(self.lines.get_nowait())
            except queue.Empty:
                break
        features = self.latest.get("features", {})
        return {k: (v["version"], v["value"]) for k, v in features.items()}

    def stop(self) -> str:
        kill_tree(self.proc.pid)
        self.proc.wait(timeout=10)
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


@pytest.mark.parametrize("mode", ["sse", "poll"])
def test_javascript_sdk_reads_the_simulator(edge: EdgeSimulator, node_sdk: Path,
                                            mode: str) -> None:
    watcher = NodeWatcher(node_sdk, edge.url, mode)
    try:
        script(edge, watcher.held)
        assert watcher.latest["readyness"] == "Ready"
    except AssertionError as err:
        raise AssertionError(f"{err}\nnode's stderr:\n{watcher.stop()[-2000:]}") from None
    stderr = watcher.stop()
    assert "Error" not in stderr, stderr[-2000:]


def test_javascript_sdk_stops_on_the_unknown_key_failure(node_sdk: Path) -> None:
    """Edge's answer to an unknown key over SSE (200, ``ack``, ``failure``) is what the JS SDK
    takes as "stop": it marks its repository Failed and stops asking."""
    with EdgeSimulator([KEY], drop_after=2.0) as edge:
        edge.keys_unknown = True
        watcher = NodeWatcher(node_sdk, edge.url, "sse")
        try:
            wait_for(lambda: (watcher.held() is not None
                              and watcher.latest.get("readyness") == "Failed"),
                     20, interval=0.05, what="the JS SDK to report Failed")
            asked = edge.total_stream_requests
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                time.sleep(0.1)   # a quiet period: it must not ask again
            assert edge.total_stream_requests == asked
        finally:
            watcher.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # its close
def test_python_sdk_keeps_asking_after_the_unknown_key_failure() -> None:
    """Recorded: the Python SDK treats ``failure`` as data and the close as a reason to
    reconnect at once (the seed page's "Python reconnects at once"), so a deleted key makes it
    ask again and again; its repository never becomes ready."""
    with EdgeSimulator([KEY], drop_after=2.0) as edge:
        edge.keys_unknown = True
        config = FeatureHubConfig(edge.url, [KEY])
        try:
            asyncio.run(config.init())
            wait_for(lambda: edge.total_stream_requests >= 3, 10, interval=0.05,
                     what="the Python SDK to ask a third time")
            assert not config.repository().is_ready()
        finally:
            config.close()
