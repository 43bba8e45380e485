"""Interop with the FeatureHub JavaScript Redis store, the real package from npm.

``tests/interop/node`` installs ``featurehub-store-redis`` 1.0.0 with npm (the
first run needs the npm registry; later runs reuse ``node_modules``) and
``drive.mjs`` runs it against the same Redis our stores use. How the store is
installed although its declared ``featurehub-javascript-core-sdk`` ^2.0.0 is not
on npm is written at the top of ``drive.mjs`` and in ``package.json``: an npm
alias of the 1.x ``featurehub-javascript-client-sdk`` under that name, and an
``overrides`` entry pointing the store's dependency at it.

* what Node writes, our gunicorn workers serve (Edge unreachable: the store is
  their only source), including a later update;
* what we write, Node reads, and the store's own fingerprint of it equals our
  ``_sha`` key;
* a mixed storm (our processes racing, Node writing one feature after another)
  loses none of our updates, and none of Node's.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from fh_prefork.listener import ListeningRepository
from fh_prefork.store import open_store
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.storm import API_KEY as STORM_KEY
from fh_prefork.testing.storm import run_storm
from tests.conftest import make_config
from tests.servers.conftest import API_KEY as SERVER_KEY
from tests.support.procs import free_port, wait_for
from tests.support.redis import Redis, value_of
from tests.support.stores import feat

#: Node processes running the FeatureHub JavaScript Redis store, and a storm
# one xdist worker runs them all: one npm install at a time, no node reading it meanwhile
pytestmark = [pytest.mark.servers, pytest.mark.xdist_group("node_store")]

NODE_DIR = Path(__file__).parent / "node"
DRIVER = NODE_DIR / "drive.mjs"


@pytest.fixture(scope="session")
def node_store() -> Path:
    """The JavaScript store installed in tests/interop/node (npm install on first use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the JavaScript store interop tests")
    with open(NODE_DIR / ".install.lock", "w") as lock:   # another test process may install
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (NODE_DIR / "node_modules" / "featurehub-store-redis").is_dir():
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=NODE_DIR, check=True, timeout=300)
    return DRIVER


def node(driver: Path, mode: str, url: str, prefix: str, env_id: str, *args: str) -> str:
    done = subprocess.run(["node", str(driver), mode, url, prefix, env_id, *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"node {mode} failed:\n{done.stderr[-3000:]}"
    return done.stdout



def test_what_node_writes_our_workers_serve(
        node_store: Path, redis_server: Redis, prefix: str,
        start_cluster: Callable[..., Cluster]) -> None:
    env_id = SERVER_KEY.split("/")[1]
    written = [feat("FLAG", 4, False), feat("NODE_ONLY", 2)]
    assert node(node_store, "write", redis_server.url, prefix, env_id,
                json.dumps(written)) == "ok"
    cluster = start_cluster("gunicorn", 3, env={
        "FH_PREFORK_STORE": redis_server.url,
        "FEATUREHUB_EDGE_URL": f"http://127.0.0.1:{free_port()}/",  # down: the store is all
    })
    served = cluster.flags("FLAG", "NODE_ONLY")
    assert {pid: (f["FLAG"]["version"], f["FLAG"]["value"], f["NODE_ONLY"]["version"])
            for pid, f in served.items()} == {pid: (4, False, 2) for pid in served}

    # a later write by Node reaches every worker at its next refresh
    node(node_store, "update", redis_server.url, prefix, env_id, json.dumps(feat("FLAG", 5)))
    wait_for(lambda: all(f["FLAG"]["version"] == 5 and f["FLAG"]["value"] is True
                         for f in cluster.flags("FLAG").values()), 15,
             what="every worker serving Node's update")


def test_what_we_write_node_reads_with_the_same_fingerprint(
        node_store: Path, redis_server: Redis, prefix: str) -> None:
    config = make_config()
    store = open_store(redis_server.url, config, {"prefix": prefix, "refresh_timeout": 60})
    assert store is not None
    repo = config.repository()
    assert isinstance(repo, ListeningRepository)
    try:
        repo.notify("features", [feat("A", 1), feat("B", 7, False), feat("GONE", 1)])
        assert store.flush(2)
        repo.notify("delete_feature", feat("GONE", 1))   # ours: tombstoned, not in the array
        assert store.flush(2)
    finally:
        store.close()
    env_id = "env-test"
    read = json.loads(node(node_store, "read", redis_server.url, prefix, env_id))
    assert read == {"A": {"version": 1, "value": True}, "B": {"version": 7, "value": False}}
    sha = json.loads(node(node_store, "sha", redis_server.url, prefix, env_id))
    assert sha["computed"] == sha["stored"], "Node's fingerprint of our array is our _sha"


def test_mixed_storm_loses_none_of_our_updates(node_store: Path, redis_server: Redis,
                                               prefix: str) -> None:
    env_id = STORM_KEY.split("/")[1]
    node_out: list[str] = []
    client = redis.Redis.from_url(redis_server.url)
    # Node writes from before our processes start until after the last one is done, one
    # update every ~5 ms: far above any real Edge's rate. (Back to back, ~1,000 writes/s,
    # its WATCH/MULTI loop starves our compare-and-set: 64 conflicts in a row defer a
    # write to the next tick; nothing is lost, but it lands late.)
    node_thread = threading.Thread(target=lambda: node_out.append(node(
        node_store, "storm", redis_server.url, prefix, env_id, "5")))
    node_thread.start()
    try:
        wait_for(lambda: client.exists(f"{prefix}_{env_id}"), 30, what="Node's first write")
        # stream updates: a full "features" list would say Node's features were deleted
        # (Edge's full list is the environment), and tombstone them by design
        result = run_storm(redis_server.url, 8, prefix=prefix, event="feature")
    finally:
        client.set(f"{prefix}_stop", b"1")
        node_thread.join(timeout=90)
    assert len(node_out) == 1
    node_writes = int(node_out[0])
    print(f"mixed storm on Redis: {result.processes} of our processes + Node writing "
          f"{node_writes} updates throughout; ours lost {result.lost}, attempts/write "
          f"{result.attempts_per_write:.2f}, conflicts {result.cas_conflicts}, "
          f"quiescence {result.seconds_to_quiescence:.3f} s")
    assert result.lost == 0 and result.gave_up == 0  # (the fingerprint: below, once Node stops)
    assert result.shared_stored == result.shared_max_sent
    try:
        stored = {f["key"] for f in json.loads(value_of(client, f"{prefix}_{env_id}"))}
    finally:
        client.close()
    assert {f"JS{i:04}" for i in range(node_writes)} <= stored, "Node's updates survive too"
    assert {f"P{i:03}" for i in range(8)} <= stored
    sha = json.loads(node(node_store, "sha", redis_server.url, prefix, env_id))
    assert sha["computed"] == sha["stored"]





def test_javascript_locale_order_fingerprint_is_read_and_repaired(
        node_store: Path, redis_server: Redis, prefix: str) -> None:
    """The JavaScript store sorts ids with localeCompare ('id-_x' < 'id-A' < 'id-b' < 'id-Z');
    ours sorts by code point ('id-A' < 'id-Z' < 'id-_x' < 'id-b'). Its _sha then matches
    neither of our formulas when the array is in a third order: we serve the features all
    the same, repair _sha to ours, and Node still reads and writes the state."""
    from fh_prefork import features as fs

    env_id = "env-test"
    key = f"{prefix}_{env_id}"
    written = [{**feat(k, 1), "id": i} for k, i in
               (("B", "id-b"), ("Z", "id-Z"), ("A", "id-A"), ("X", "id-_x"))]
    node(node_store, "write", redis_server.url, prefix, env_id, json.dumps(written))
    client = redis.Redis.from_url(redis_server.url)
    try:
        js_sha = value_of(client, f"{key}_sha").decode()
        decoded = fs.decode(value_of(client, key), 10**6)
        assert js_sha not in decoded.consistent_fingerprints(), "the orders really differ"
        config = make_config()
        store = open_store(redis_server.url, config, {"prefix": prefix, "refresh_timeout": 60})
        assert store is not None
        try:
            repo = config.repository()
            assert {k: repo.feature(k).get_version for k in "BZAX"} == dict.fromkeys("BZAX", 1)
            assert store.refresh(3)
            wait_for(lambda: client.get(f"{key}_sha") == fs.fingerprint(written).encode(), 5,
                     what="_sha repaired to the code-point order")
        finally:
            store.close()
        assert set(json.loads(node(node_store, "read", redis_server.url, prefix, env_id))) \
            == set("BZAX")
        node(node_store, "update", redis_server.url, prefix, env_id,
             json.dumps({**feat("B", 2), "id": "id-b"}))
        versions = {f["key"]: f["version"] for f in json.loads(value_of(client, key))}
        assert versions == {"B": 2, "Z": 1, "A": 1, "X": 1}
    finally:
        client.close()
