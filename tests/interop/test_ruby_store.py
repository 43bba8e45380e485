"""Our gunicorn workers and the FeatureHub Ruby SDK's MemcacheSessionStore on the same keys.

The Ruby side is tests/support/ruby_store.rb: the Ruby store's write and refresh protocol
on the real Dalli gem (JSON serializer, default zlib compression), one long-lived process
per test. What the store holds is read here with code of our own (flags, zlib, the JSON
string around the array), never with the decoder under test.

Every check is on the whole state: every feature, in every worker and in the store.
"""

from __future__ import annotations

import collections
import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from fh_prefork import settings as fh_settings
from fh_prefork.store import options as store_options
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.memcached import Memcached
from tests.support.procs import wait_for
from tests.support.ruby import (
    COMPRESSED,
    SERIALIZED,
    RubyStore,
    array_fingerprint,
    inflate,
    raw_item,
    ruby_missing,
    sorted_fingerprint,
    stored_array,
)
from tests.support.servers import fh_log_lines
from tests.support.state import State, describe, differences, edge_state, worker_states

RUBY_MISSING = ruby_missing()
pytestmark = pytest.mark.skipif(RUBY_MISSING is not None, reason=f"{RUBY_MISSING}")

StartCluster = Callable[..., Cluster]

#: Refresh period of the workers in these tests, and how many ticks apart their periodic
#: full read ("verify") comes: FH_PREFORK_VERIFY_EVERY where the settings have it, else the
#: store option's default.
REFRESH = 0.25
VERIFY_TICKS = int(getattr(store_options.SessionStoreOptions(), "verify_every", 12))
HAS_VERIFY_SETTING = any(s.env == "FH_PREFORK_VERIFY_EVERY" for s in fh_settings.SETTINGS)
VERIFY_SETTING = 2
#: Ticks between two full reads of one worker, as these tests run it.
TICKS_PER_VERIFY = VERIFY_SETTING if HAS_VERIFY_SETTING else VERIFY_TICKS
#: Longest a correct worker may take to see, or repair, what another writer did (and to
#: run the full reads test b waits for).
CATCH_UP = (2 * TICKS_PER_VERIFY + 3) * REFRESH * 1.2 + 3


def fast_env() -> dict[str, str | None]:
    env: dict[str, str | None] = {"FH_PREFORK_REFRESH_SECONDS": str(REFRESH)}
    if HAS_VERIFY_SETTING:
        env["FH_PREFORK_VERIFY_EVERY"] = str(VERIFY_SETTING)
    return env


def keys(prefix: str) -> tuple[str, str]:
    """Data key and fingerprint key of the servers' environment (API key .../env-srv/...)."""
    return f"{prefix}_env-srv", f"{prefix}_env-srv_sha"


def state_of(features: Iterable[Mapping[str, Any]]) -> State:
    return {f["key"]: (f["id"], f["version"]) for f in features}


def store_state(address: str, data_key: str) -> State | None:
    """What the data key holds, read as the Ruby store reads it (None: absent, unreadable)."""
    array = stored_array(address, data_key)
    if array is None:
        return None
    return {f["key"]: (f["id"], f["version"]) for f in array
            if isinstance(f, dict) and {"key", "id", "version"} <= set(f)}


def settle(cluster: Cluster, address: str, data_key: str, expected: State, timeout: float,
           what: str) -> float:
    """Wait until every worker and the store hold exactly ``expected``; seconds it took.

    Fails naming every worker and the store that differ, and how.
    """
    started = time.monotonic()
    seen: dict[str, Any] = {}

    def converged() -> bool:
        seen["workers"] = worker_states(cluster, timeout=10)
        seen["store"] = store_state(address, data_key)
        return (all(held == expected for held in seen["workers"].values())
                and seen["store"] == expected)

    try:
        wait_for(converged, timeout, interval=0.1, what=what)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe(expected, seen['workers'], seen['store'])}"
                             ) from None
    return time.monotonic() - started


def counters(cluster: Cluster) -> dict[int, dict[str, int]]:
    return {pid: dict(s["store"]["counters"]) for pid, s in cluster.statuses().items()}


#: Full reads each worker must run after a Ruby write: the one its change triggers, then
#: periodic verifies (a core that "repairs" a fingerprint would do it in one of them).
FULL_READS = 3


def cycled(start: Mapping[str, int], now: Mapping[str, int]) -> bool:
    """``FULL_READS`` full reads (and as many ticks) since the counters ``start``."""
    if "reads" in start and "reads" in now:
        return (now["reads"] - start["reads"] >= FULL_READS
                and now["refreshes"] - start["refreshes"] >= FULL_READS)
    ticks = (FULL_READS - 1) * TICKS_PER_VERIFY + 2   # a core without a reads counter
    return now.get("refreshes", 0) - start.get("refreshes", 0) >= ticks


def all_cycled(before: Mapping[int, Mapping[str, int]], cluster: Cluster) -> bool:
    """Every worker ran its full reads since ``before`` (its counters then)."""
    now = counters(cluster)
    return all(pid in now and cycled(c, now[pid]) for pid, c in before.items())


def totals(per_worker: Mapping[int, Mapping[str, int]]) -> dict[str, int]:
    out: collections.Counter[str] = collections.Counter()
    for values in per_worker.values():
        out.update({k: v for k, v in values.items() if isinstance(v, int)})
    return dict(out)


def test_compressed_ruby_state_is_served_by_every_worker_and_kept(
        start_cluster: StartCluster, memcached: Memcached, edge: EdgeSimulator, prefix: str,
        tmp_path: Path) -> None:
    """Ruby writes 32 new features (its stream got them first): a zlib value, flags 3.

    Our workers are connected first: a full ``features`` list from Edge is the whole
    environment, so features written before it that it lacks would rightly be deleted.
    """
    data_key, _sha_key = keys(prefix)
    cluster = start_cluster("gunicorn", 4, env=fast_env())
    settle(cluster, memcached.address, data_key, edge_state(edge), 10,
           "our workers to write Edge's state")
    ruby_features = [make_feature(f"RUBY_A{i:02d}", f"ruby value {i} " + "r" * 120, 3,
                                  type="STRING") for i in range(32)]
    with RubyStore(memcached.address, data_key, log_path=tmp_path / "ruby.log") as ruby:
        answer = ruby.updates(ruby_features)
        assert answer["result"] == "written", answer
        value, flags = raw_item(memcached.address, data_key) or (b"", 0)
        inflated = inflate(value) if flags & COMPRESSED else value
        print(f"Ruby (Dalli {ruby.info['dalli']}) wrote {len(ruby_features)} new features: "
              f"{len(inflated)} bytes of JSON string, stored zlib-compressed as {len(value)} "
              f"bytes, flags {flags}")
        assert flags == SERIALIZED | COMPRESSED, "precondition: Dalli compressed the value"
        assert value[:2] == b"\x78\x9c" and len(inflated) >= 4096

        expected = {**edge_state(edge), **state_of(ruby_features)}
        took = settle(cluster, memcached.address, data_key, expected, CATCH_UP,
                      "every worker to serve every Ruby-written feature and Edge's, and the "
                      "store to hold all of them")
        print(f"4 workers serve all {len(expected)} features {took:.2f} s after Ruby wrote")

        edge.push_feature(make_feature("FLAG", False, 2))
        expected = {**edge_state(edge), **state_of(ruby_features)}
        took = settle(cluster, memcached.address, data_key, expected, CATCH_UP,
                      "an Edge update to be written next to every Ruby-written feature")
        print(f"Edge update written, Ruby's features kept, in {took:.2f} s")
        read_back = state_of(ruby.read())
        assert read_back == expected, f"what Ruby reads back: {differences(expected, read_back)}"

    complaints = [line for line in fh_log_lines(cluster)
                  if "UTF-8" in line or "junk" in line.lower()]
    assert not complaints, complaints
    junk = {pid: c.get("junk", 0) for pid, c in counters(cluster).items()}
    assert not any(junk.values()), f"workers counted junk in the store: {junk}"


def test_ruby_fingerprint_of_an_unsorted_array_is_left_byte_for_byte(
        start_cluster: StartCluster, memcached: Memcached, edge: EdgeSimulator, prefix: str,
        tmp_path: Path) -> None:
    """Ruby appends features out of id order and fingerprints the array in its own order.

    Our workers must leave that ``_sha`` alone (it is consistent, just not sorted): any
    rewrite, even to an equivalent value, makes a long-lived Ruby writer's next update
    fail all its attempts until its 300 s timer runs.
    """
    data_key, sha_key = keys(prefix)
    cluster = start_cluster("gunicorn", 4, env=fast_env())
    expected = edge_state(edge)
    settle(cluster, memcached.address, data_key, expected, 10,
           "our workers to write Edge's state")

    def ruby_feature(n: int) -> dict[str, Any]:
        # an id that sorts before every stored one: appended, it leaves the array unsorted
        return make_feature(f"RUBY_B{n}", f"ruby {n}", 1, type="STRING",
                            id=f"{9 - n:08d}-0000-4000-8000-000000000000")

    # the Ruby store's defaults: 10 attempts 500 ms apart, refresh timer far away (300 s)
    with RubyStore(memcached.address, data_key, log_path=tmp_path / "ruby.log") as ruby:
        answer = ruby.update(ruby_feature(0))
        assert answer["result"] == "written" and answer["attempts"] == 1, answer
        expected.update(state_of([ruby_feature(0)]))
        for run in range(1, 4):
            array = ruby.read()
            assert array_fingerprint(array) != sorted_fingerprint(array), \
                "precondition: the Ruby-written array is not sorted by id"
            ruby_sha = (json.dumps(array_fingerprint(array)).encode(), SERIALIZED)
            assert raw_item(memcached.address, sha_key) == ruby_sha, \
                "precondition: _sha holds what Ruby wrote (a JSON string, flags 1)"
            before = counters(cluster)
            started = time.monotonic()
            wait_for(functools.partial(all_cycled, before, cluster), CATCH_UP, interval=0.1,
                     what=f"every worker to run {FULL_READS} full reads (the change, then "
                          f"periodic verifies)")
            cycles = time.monotonic() - started
            held = raw_item(memcached.address, sha_key)
            assert held == ruby_sha, (
                f"run {run}: our workers changed the _sha Ruby wrote for its unsorted array: "
                f"{ruby_sha!r} -> {held!r}")
            settle(cluster, memcached.address, data_key, expected, CATCH_UP,
                   "every worker to serve the Ruby-written features")
            answer = ruby.update(ruby_feature(run))
            print(f"run {run}: 4 workers ran their full reads in {cycles:.2f} s, _sha "
                  f"unchanged; Ruby's next update: {answer['result']} after "
                  f"{answer['attempts']} attempt(s), {answer['ms']:.0f} ms")
            assert answer["result"] == "written" and answer["attempts"] == 1, (
                f"run {run}: the long-lived Ruby writer's next update: {answer}")
            expected.update(state_of([ruby_feature(run)]))
        settle(cluster, memcached.address, data_key, expected, CATCH_UP,
               "every worker to serve every Ruby-written feature")


STORM_SECONDS = 4.0
PUSH_INTERVAL = 0.02            # between two Edge pushes: paces the storm, it is not a wait
OURS = [f"PY_{i}" for i in range(10)]
RUBYS = [f"RUBY_C{i}" for i in range(4)]
SHARED = [f"SHARED_{i}" for i in range(3)]
#: status counters a store core may use for "a write of ours was lost and written back"
WRITE_BACK_COUNTERS = ("heals", "restored", "written_back", "rewrites", "repairs")


def test_mixed_storm_with_a_ruby_writer_loses_no_update(
        start_cluster: StartCluster, memcached: Memcached, edge: EdgeSimulator, prefix: str,
        tmp_path: Path) -> None:
    """Ruby and our workers write disjoint and shared features at once for a few seconds.

    Ruby's plain set of the data key can land on a write of ours; every update one of our
    processes received must still end in the store at its newest version, and in every
    worker, and so must every write Ruby reported done.
    """
    data_key, _sha_key = keys(prefix)
    cluster = start_cluster("gunicorn", 4, env=fast_env())
    assert edge.wait_for_streams(4, 10)
    settle(cluster, memcached.address, data_key, edge_state(edge), 10,
           "our workers to write Edge's state")
    streams = [s.id for s in edge.streams()]
    initial = edge_state(edge)
    before = counters(cluster)

    lock = threading.Lock()
    last_version: dict[str, int] = collections.defaultdict(int)
    received: dict[str, tuple[str, int]] = {}      # what our processes got from Edge, newest
    ruby_wrote: dict[str, tuple[str, int]] = {}    # what Ruby's writes put in, newest
    ruby_answers: list[dict[str, Any]] = []
    failures: list[BaseException] = []
    pushes = {"all streams": 0, "one stream": 0}

    def feature(key: str, value: int) -> dict[str, Any]:
        with lock:
            last_version[key] += 1
            return make_feature(key, value, last_version[key], type="NUMBER")

    def newest(into: dict[str, tuple[str, int]], f: Mapping[str, Any]) -> None:
        with lock:
            if f["key"] not in into or into[f["key"]][1] < f["version"]:
                into[f["key"]] = (f["id"], f["version"])

    # a busy Ruby app: its timer ticks every 50 ms and its attempts are 20 ms apart, so it
    # writes between ours; a 2 ms pause between claiming _sha and setting the data (GC, the
    # GVL) lets its plain set land on writes of ours, which must then be written back
    with RubyStore(memcached.address, data_key, retries=10, backoff_ms=20,
                   refresh_seconds=0.05, set_delay_ms=2, observe_overwrites=True,
                   log_path=tmp_path / "ruby.log") as ruby:

        def ruby_storm() -> None:
            try:
                n = 0
                while time.monotonic() < deadline:
                    f = feature((RUBYS + SHARED)[n % (len(RUBYS) + len(SHARED))], n)
                    answer = ruby.update(f)
                    ruby_answers.append(answer)
                    if answer.get("result") == "written":
                        newest(ruby_wrote, f)
                    n += 1
            except BaseException as err:
                failures.append(err)

        deadline = time.monotonic() + STORM_SECONDS
        thread = threading.Thread(target=ruby_storm, daemon=True)
        thread.start()
        n = 0
        while time.monotonic() < deadline:
            f = feature((OURS + SHARED)[n % (len(OURS) + len(SHARED))], n)
            one = n % 3 != 0                      # two in three reach one worker only
            edge.push_feature(f, streams[n % len(streams)] if one else None)
            pushes["one stream" if one else "all streams"] += 1
            newest(received, f)
            n += 1
            time.sleep(PUSH_INTERVAL)
        thread.join(timeout=ruby.timeout + 5)
        assert not thread.is_alive(), "the Ruby writer did not stop"
        assert not failures, failures

        expected = dict(initial)
        for source in (received, ruby_wrote):
            for key, (fid, version) in source.items():
                if key not in expected or expected[key][1] < version:
                    expected[key] = (fid, version)
        try:
            took = settle(cluster, memcached.address, data_key, expected, CATCH_UP,
                          "every update our processes received (and every Ruby write) in the "
                          "store at its newest version and served by every worker")
        finally:
            after = totals({pid: {k: v - before.get(pid, {}).get(k, 0) for k, v in c.items()}
                            for pid, c in counters(cluster).items()})
            results = collections.Counter(a.get("result", "error") for a in ruby_answers)
            attempts = collections.Counter(a.get("attempts", 0) for a in ruby_answers
                                           if a.get("result") == "written")
            overwrote = sum(1 for a in ruby_answers if a.get("overwrote"))
            back = {k: after[k] for k in WRITE_BACK_COUNTERS if k in after}
            print(f"storm of {STORM_SECONDS:.0f} s: Edge pushes {pushes}; Ruby updates "
                  f"{dict(results)}, written after attempts {dict(sorted(attempts.items()))}")
            print(f"Ruby's data set overwrote a write of ours {overwrote} time(s); written "
                  f"back by our workers: {back or 'no write-back counter in this core'}")
            print(f"our workers' store counters over the storm: {after}")
        print(f"whole state converged {took:.2f} s after the storm: {len(expected)} features")
        read_back = state_of(ruby.read())
        assert read_back == expected, f"what Ruby reads back: {differences(expected, read_back)}"
