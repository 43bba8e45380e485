"""memcached-only behaviour: key layout, Ruby interop, unreachable servers, crashes, restarts."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
from typing import Any

import pytest
from pymemcache.client.base import Client
from pymemcache.serde import pickle_serde

from fh_prefork import MemcacheSessionStore
from fh_prefork import features as fs
from fh_prefork.testing import faults
from tests.conftest import make_config
from tests.support.memcached import Memcached
from tests.support.procs import free_port, wait_for
from tests.support.stores import feat, repo_of, write_and_close


@pytest.fixture
def client(memcached: Memcached) -> Any:
    c = Client(("127.0.0.1", memcached.port), connect_timeout=1, timeout=1,
               default_noreply=False)
    yield c
    c.close()


def test_key_layout_and_plain_json_values(memcached: Memcached, client: Any,
                                          prefix: str) -> None:
    config = make_config("p/env42/c*s")
    store = MemcacheSessionStore(memcached.address, config, {"prefix": prefix})
    write_and_close(store, config, "features", [feat("B", 2), feat("A", 1)])
    value, flags = client.get(f"{prefix}_env42"), None
    assert json.loads(value) == [feat("A", 1), feat("B", 2)]
    expected_sha = fs.fingerprint([feat("A", 1), feat("B", 2)])
    assert client.get(f"{prefix}_env42_sha") == expected_sha.encode()
    raw = client.raw_command(f"get {prefix}_env42".encode(), b"END")
    flags = int(raw.split(b"\r\n")[0].split()[2])
    assert flags == 0, "values must be plain bytes, readable by any SDK"


def test_reads_the_ruby_stores_json_string_form(memcached: Memcached, client: Any,
                                                prefix: str) -> None:
    ruby_value = json.dumps(json.dumps([feat("R", 4)]))  # Dalli JSON serializer, flags 1
    ruby_sha = json.dumps(fs.fingerprint([feat("R", 4)]))
    client.set(f"{prefix}_env-test", ruby_value.encode(), flags=1)
    client.set(f"{prefix}_env-test_sha", ruby_sha.encode(), flags=1)
    config = make_config()
    store = MemcacheSessionStore(memcached.url, config, {"prefix": prefix})
    try:
        assert repo_of(config).feature("R").get_version == 4
        repo_of(config).notify("feature", feat("P", 1))
        assert store.flush(2)
    finally:
        store.close()
    merged = json.loads(client.get(f"{prefix}_env-test"))
    assert {f["key"] for f in merged} == {"R", "P"}, "Ruby's feature kept, plain form written"


def test_unreachable_memcached_constructor_returns_within_3s_and_warns(
        caplog: pytest.LogCaptureFixture) -> None:
    config = make_config()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="fh_prefork"):
        store = MemcacheSessionStore(f"127.0.0.1:{free_port()}", config)
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 3.0
        assert "cannot read" in caplog.text
        repo_of(config).notify("feature", feat("A", 1))  # still works from memory
        assert repo_of(config).feature("A").is_enabled
        assert not store.status()["healthy"]
    finally:
        store.close(flush_timeout=0)


def test_unanswering_memcached_is_bounded_by_timeouts() -> None:
    """A server that accepts connections and never answers must not stall the constructor."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        config = make_config()
        started = time.monotonic()
        store = MemcacheSessionStore(f"127.0.0.1:{port}", config,
                                     {"timeout": 0.3, "connect_timeout": 0.3})
        assert time.monotonic() - started < 3.0
        store.close(flush_timeout=0)
    finally:
        listener.close()


def test_client_that_would_deserialize_is_refused(memcached: Memcached) -> None:
    unsafe = Client(("127.0.0.1", memcached.port), serde=pickle_serde)
    with pytest.raises(ValueError, match="deserializes values"):
        MemcacheSessionStore(unsafe, make_config())


def test_pymemcache_client_is_accepted(memcached: Memcached, prefix: str) -> None:
    client = Client(("127.0.0.1", memcached.port), default_noreply=True)  # noreply is overridden
    config = make_config()
    store = MemcacheSessionStore(client, config, {"prefix": prefix})
    try:
        repo_of(config).notify("feature", feat("C", 1))
        assert store.flush(2)
        assert store.counters.writes == 1
    finally:
        store.close()


@pytest.mark.parametrize("prefix_value", ["a" * 240, "with space", "tab\there"])
def test_invalid_memcache_key_is_a_value_error(memcached: Memcached, prefix_value: str) -> None:
    with pytest.raises(ValueError):
        MemcacheSessionStore(memcached.address, make_config(), {"prefix": prefix_value})


def test_server_evaluated_key_is_refused(memcached: Memcached) -> None:
    with pytest.raises(ValueError, match="only client-evaluated"):
        MemcacheSessionStore(memcached.address, make_config("p/env/serverkey"))


def _die_between_data_and_fingerprint(address: str, prefix: str) -> None:
    config = make_config()
    store = MemcacheSessionStore(address, config, {"prefix": prefix})
    faults.kill_at(store, "between_data_and_fingerprint")
    config.repository().notify("feature", feat("CRASH", 1))
    store.flush(10)  # never returns: the process is killed at the fault point


def test_crash_between_data_and_fingerprint_never_leaves_others_stale(
        memcached: Memcached, client: Any, prefix: str) -> None:
    watcher_config = make_config()
    watcher = MemcacheSessionStore(memcached.address, watcher_config,
                                   {"prefix": prefix, "refresh_timeout": 0.1,
                                    "verify_every": 4})
    try:
        proc = mp.get_context("spawn").Process(target=_die_between_data_and_fingerprint,
                                               args=(memcached.address, prefix))
        proc.start()
        proc.join(30)
        assert proc.exitcode == -9, "the writer must have died at the fault point"
        assert client.get(f"{prefix}_env-test") is not None, "data was stored"
        # the fingerprint key is stale (missing); the watcher's full read repairs it
        wait_for(lambda: repo_of(watcher_config).feature("CRASH").get_version == 1, 5,
                 what="watcher to see the crashed writer's data")
        wait_for(lambda: client.get(f"{prefix}_env-test_sha") ==
                 fs.fingerprint([feat("CRASH", 1)]).encode(), 5, what="fingerprint repaired")
    finally:
        watcher.close()


def test_a_writer_delayed_between_data_and_fingerprint_never_sets_it_over_a_newer_write(
        memcached: Memcached, client: Any, prefix: str) -> None:
    """A's data lands, then A stalls before its fingerprint; B writes data and fingerprint;
    A resumes. A's fingerprint must not replace B's: the data is B's."""
    import threading

    a_cfg, b_cfg = make_config(), make_config()
    a = MemcacheSessionStore(memcached.address, a_cfg, {"prefix": prefix})
    b = MemcacheSessionStore(memcached.address, b_cfg, {"prefix": prefix})
    entered, release = threading.Event(), threading.Event()

    def stall() -> None:
        entered.set()
        release.wait(10)

    undo = faults.inject(a, "between_data_and_fingerprint", stall)
    try:
        repo_of(a_cfg).notify("feature", feat("A", 1))
        assert entered.wait(5), "A's write reached the point between its two keys"
        undo()
        repo_of(b_cfg).notify("feature", feat("B", 1))
        assert b.flush(5)
        release.set()
        assert a.flush(5)
        data = client.get(f"{prefix}_env-test")
        held = fs.decode(data, fs.MAX_READ_BYTES).placed.values()
        assert {f["key"] for f in held} == {"A", "B"}
        assert client.get(f"{prefix}_env-test_sha") == fs.fingerprint(held).encode()
    finally:
        release.set()
        a.close()
        b.close()


def test_stale_fingerprint_is_repaired_by_the_periodic_full_read(
        memcached: Memcached, client: Any, prefix: str) -> None:
    """Worst case of a crash: the fingerprint still matches what readers saw last."""
    config = make_config()
    store = MemcacheSessionStore(memcached.address, config,
                                 {"prefix": prefix, "refresh_timeout": 0.05, "verify_every": 5})
    try:
        repo_of(config).notify("feature", feat("A", 1))
        assert store.flush(2)
        old_sha = client.get(f"{prefix}_env-test_sha")
        client.set(f"{prefix}_env-test", json.dumps([feat("A", 2, False)]).encode())
        assert client.get(f"{prefix}_env-test_sha") == old_sha  # token says nothing changed
        wait_for(lambda: repo_of(config).feature("A").get_version == 2, 5,
                 what="full read to find the change")
    finally:
        store.close()


def test_restarted_memcached_is_seeded_from_memory_within_a_refresh(
        prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    with Memcached() as server:
        config = make_config()
        store = MemcacheSessionStore(server.address, config,
                                     {"prefix": prefix, "refresh_timeout": 0.2})
        try:
            repo_of(config).notify("features", [feat("A", 3), feat("B", 1)])
            assert store.flush(2)
            with caplog.at_level(logging.INFO, logger="fh_prefork"):
                server.restart()
                c = Client(("127.0.0.1", server.port), connect_timeout=1, timeout=1)
                wait_for(lambda: c.get(f"{prefix}_env-test") is not None, 5,
                         what="store seeded again")
                held = {f["id"]: f["version"] for f in json.loads(c.get(f"{prefix}_env-test"))}
                c.close()
            assert held == {"id-A": 3, "id-B": 1}
            assert store.counters.seeds >= 1
            assert "held no state; wrote the 2 feature(s)" in caplog.text
        finally:
            store.close(flush_timeout=0)


def test_updates_while_memcached_is_down_are_written_when_it_returns(prefix: str) -> None:
    with Memcached() as server:
        config = make_config()
        store = MemcacheSessionStore(server.address, config,
                                     {"prefix": prefix, "refresh_timeout": 0.2})
        try:
            server.stop()
            repo_of(config).notify("feature", feat("DURING", 1))
            assert not store.flush(0.5)
            assert repo_of(config).feature("DURING").is_enabled  # served from memory meanwhile
            server.start()
            assert store.flush(5)
            c = Client(("127.0.0.1", server.port), connect_timeout=1, timeout=1)
            assert json.loads(c.get(f"{prefix}_env-test"))[0]["key"] == "DURING"
            c.close()
        finally:
            store.close(flush_timeout=0)


def test_a_stale_fingerprint_found_at_start_is_repaired_by_the_store_thread(
        memcached: Memcached, client: Any, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The constructor runs in the post-fork hook: it reads and replays, and leaves the
    fingerprint's repair (a second read and a write) to the store thread."""
    import threading

    from fh_prefork.store.memcache import MemcacheBackend

    settled_on: list[str] = []
    real_settle = MemcacheBackend.settle

    def settle(self: MemcacheBackend, *args: Any) -> Any:
        settled_on.append(threading.current_thread().name)
        return real_settle(self, *args)

    monkeypatch.setattr(MemcacheBackend, "settle", settle)
    client.set(f"{prefix}_env-test", json.dumps([feat("A", 1), feat("B", 2)]).encode())
    client.set(f"{prefix}_env-test_sha", b"a-fingerprint-no-formula-gives")
    config = make_config()
    store = MemcacheSessionStore(memcached.address, config, {"prefix": prefix})
    try:
        assert {f.key: f.get_version for f in [repo_of(config).feature("A"),
                                               repo_of(config).feature("B")]} == {"A": 1, "B": 2}
        expected = fs.fingerprint([feat("A", 1), feat("B", 2)]).encode()
        wait_for(lambda: client.get(f"{prefix}_env-test_sha") == expected, 5,
                 what="the fingerprint repaired")
    finally:
        store.close()
    assert settled_on and all(name.startswith("fh-prefork-") for name in settled_on), settled_on


def test_health_returns_with_the_server_even_when_it_holds_nothing(
        own_memcached: Memcached, prefix: str) -> None:
    """A process that knows no flags yet reads an empty store: that is an answer, not an
    outage. Health must follow the server, whatever the state it holds."""
    config = make_config()
    store = MemcacheSessionStore(own_memcached.address, config,
                                 {"prefix": prefix, "refresh_timeout": 0.05,
                                  "connect_timeout": 0.3, "timeout": 0.3})
    try:
        assert store.status()["healthy"]
        own_memcached.stop()
        wait_for(lambda: not store.status()["healthy"], 5, what="unhealthy while down")
        own_memcached.start()
        wait_for(lambda: store.status()["healthy"], 5, what="healthy once it answers again")
        assert store.status()["state_problem"] == "the store holds no state yet"
    finally:
        store.close(flush_timeout=0)


@pytest.mark.parametrize("compressed", [False, True])
def test_flush_after_start_returns_only_once_the_start_read_is_settled(
        memcached: Memcached, client: Any, prefix: str, compressed: bool) -> None:
    """The Ruby store's forms at a worker's start (a JSON string, zlib-compressed by Dalli
    past 4 KiB, its fingerprint over the array in its own order): the deferred check at
    start agrees with it and writes nothing; a stale fingerprint beside the same value is
    repaired by the time flush() says done."""
    import zlib

    states = [feat(f"K{i:03}", 1 + i % 3, fid=f"z{99 - i:03}") for i in range(60)]  # unsorted
    value = json.dumps(json.dumps(states)).encode()
    if compressed:
        value = zlib.compress(value)
    in_order = fs.fingerprint_in_order((f["id"], f["version"]) for f in states)
    for sha, repaired in ((json.dumps(in_order).encode(), False), (b"stale", True)):
        client.set(f"{prefix}_env-test", value, flags=3 if compressed else 1)
        client.set(f"{prefix}_env-test_sha", sha, flags=1)
        config = make_config()
        store = MemcacheSessionStore(memcached.address, config, {"prefix": prefix})
        try:
            assert len(repo_of(config).features) == 60
            assert ({f["key"]: f["version"] for f in repo_of(config).feature_states()}
                    == {f["key"]: f["version"] for f in states}), "the whole Ruby state replayed"
            assert store.flush(5)
            assert store.status()["fingerprint"] == fs.fingerprint(states)
            assert store.counters.settles == int(repaired) and store.counters.writes == 0
            assert client.get(f"{prefix}_env-test") == value, "the Ruby value was rewritten"
            expected = fs.fingerprint(states).encode() if repaired else sha
            assert client.get(f"{prefix}_env-test_sha") == expected
        finally:
            store.close()


@pytest.mark.parametrize("servers", [1, 2])
def test_a_read_asks_the_data_before_the_tombstones_in_one_round_trip(
        memcached: Memcached, own_memcached: Memcached, prefix: str, servers: int) -> None:
    """backend.py's ordering contract on memcached, with the three keys in one multi-get:
    one server gets one command naming the data key first; a HashClient whose data and
    tombstones keys sit on different servers asks the data key's server first. Either way
    the read returns the tombstones the store holds."""
    from pymemcache.client.hash import HashClient

    from fh_prefork import tombstones as ts
    from fh_prefork.store.memcache import MemcacheBackend

    address = memcached.address if servers == 1 else \
        f"{memcached.address},{own_memcached.address}"
    if servers == 2:    # a prefix that puts the data and the tombstones on different servers
        nodes = HashClient([("127.0.0.1", memcached.port), ("127.0.0.1", own_memcached.port)])
        prefix = next(p for p in (f"{prefix}{n}" for n in range(200))
                      if nodes._get_client(f"{p}_env-test").server
                      != nodes._get_client(f"{p}_env-test_deleted").server)
    config = make_config()
    store = MemcacheSessionStore(address, config, {"prefix": prefix})
    try:
        repo_of(config).notify("features", [feat("A", 1), feat("B", 1)])
        repo_of(config).notify("delete_feature", {"id": "id-B", "key": "B", "version": 0})
        assert store.flush(5)
        backend = store._backend
        assert isinstance(backend, MemcacheBackend)
        keys = [backend.data_key, backend.sha_key, backend.tombstones_key]
        client: Any = backend._client
        spied = list(client.clients.values()) if isinstance(client, HashClient) else [client]
        asked: list[list[str]] = []
        for node in spied:
            def gets_many(wanted: list[str], *, _real: Any = node.gets_many) -> Any:
                asked.append(list(wanted))
                return _real(wanted)
            node.gets_many = gets_many
        snapshot = backend.read()
    finally:
        store.close()
    in_order = [key for wanted in asked for key in wanted]
    assert sorted(in_order) == sorted(keys), asked
    assert in_order.index(keys[0]) < in_order.index(keys[2]), asked
    if servers == 1:
        assert asked == [keys], "one round trip, data first"
    else:
        assert len(asked) == 2 and keys[0] in asked[0], asked
    assert "id-B" in ts.decode(snapshot.tombstones, fs.MAX_READ_BYTES)[0], snapshot
