"""Each stored entry is judged once per distinct content, not per read and per layer.

The shape check (``features._judge_all``, every entry's one way in) is counted:
a verify read of an unchanged state judges nothing, a changed entry is the only one judged, a
store's start judges each entry once (not again in the listener), and two
different contents never share a verdict.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from featurehub_sdk.featurehub_config import FeatureHubConfig

from fh_prefork import features as fs
from fh_prefork.features import fingerprint as real_fingerprint
from fh_prefork.store import open_store
from fh_prefork.verdicts import USABLE, Verdict, VerdictCache
from tests.support.procs import wait_for
from tests.support.stores import feat, repo_of


class Counted:
    """``features._judge_all`` with a count of the entries it judged."""

    def __init__(self) -> None:
        self.calls = 0
        self._judge_all = fs._judge_all

    def __call__(self, items: list[Any]) -> list[Verdict]:
        self.calls += len(items)
        return self._judge_all(items)


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counted]:
    """A cold verdict cache, and the shape checks counted (decode's and the listener's)."""
    fs.VERDICTS.clear()
    counted = Counted()
    monkeypatch.setattr(fs, "_judge_all", counted)
    yield counted
    fs.VERDICTS.clear()


@pytest.fixture
def fingerprinted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``fs.fingerprint`` counted: one entry per value fingerprinted."""
    made: list[int] = []

    def counted(features: Any) -> str:
        made.append(1)
        return real_fingerprint(features)

    monkeypatch.setattr(fs, "fingerprint", counted)
    return made


def value(features: list[dict[str, Any]]) -> bytes:
    return fs.encode(features)


def versions(config: Any) -> dict[str, int]:
    """key -> version of every feature state a config's repository holds."""
    return {f["key"]: f["version"] for f in repo_of(config).feature_states()}


def many(n: int, version: int = 1) -> list[dict[str, Any]]:
    return [feat(f"F{i:03}", version) for i in range(n)]


def test_a_verify_read_of_an_unchanged_state_judges_nothing(judged: Counted) -> None:
    raw = value(many(50))
    first = fs.decode(raw, 10**6)
    assert judged.calls == 50
    again = fs.decode(raw, 10**6)
    assert judged.calls == 50, "the second read of the same bytes judged entries again"
    assert again.features == first.features and again.problems == first.problems
    assert all(a is not b for a, b in zip(again.features, first.features, strict=True)), \
        "each read hands out its own objects"


def test_only_the_changed_entry_is_judged(judged: Counted) -> None:
    states = many(50)
    fs.decode(value(states), 10**6)
    states[7] = feat("F007", 2)
    decoded = fs.decode(value(states), 10**6)
    assert judged.calls == 51
    assert decoded.by_id["id-F007"]["version"] == 2


def test_every_form_reuses_the_verdicts(judged: Counted) -> None:
    states = many(5)
    plain = json.dumps(states)
    fs.decode(plain.encode(), 10**6)
    ruby = json.dumps(plain).encode()       # Dalli's JSON serializer: the array in a string
    spaced = ("[\n  " + ",\n  ".join(json.dumps(s) for s in states) + "\n]").encode()
    assert fs.decode(ruby, 10**6).form == "json-string"
    assert judged.calls == 5, "the same entry texts inside a JSON string were judged again"
    assert len(fs.decode(spaced, 10**6).features) == 5
    assert judged.calls == 5, "whitespace between entries changed their texts"


def test_two_different_contents_never_share_a_verdict(judged: Counted) -> None:
    good = feat("A", 3)
    bad = dict(good, strategies=5)          # same id, key and version: only the shape differs
    assert fs.decode(value([good]), 10**6).features == [good]
    decoded = fs.decode(value([bad]), 10**6)
    assert decoded.features == [] and decoded.unusable == {"id-A": bad}
    reordered = json.dumps([dict(reversed(list(bad.items())))]).encode()
    assert fs.decode(reordered, 10**6).features == []
    again = fs.decode(value([good]), 10**6)
    assert again.features == [good]


def test_irregular_text_decodes_as_json_loads_reads_it(judged: Counted) -> None:
    entry = json.dumps(feat("A", 1))
    for text, usable in [
        (f" \n[ {entry} ,\t{entry}\r] ", 1),       # JSON whitespace everywhere, a duplicate
        ("[]", 0), (" [ ] ", 0),
    ]:
        decoded = fs.decode(text.encode(), 10**6)
        assert decoded.problem is None and len(decoded.features) == usable, text
    for text in [f"[{entry},]", f"[{entry}] x", f"[{entry}", "[1 2]", "[", "[] []", "{}",
                 "[" * 100_000 + "]" * 100_000]:
        decoded = fs.decode(text.encode(), 10**6)
        assert decoded.problem is not None, text[:40]
        assert decoded.features == []


def test_a_store_start_judges_each_entry_once(judged: Counted, tmp_path: Path) -> None:
    """The constructor reads and replays: decode judges, the listener does not again."""
    url = f"file://{tmp_path}"
    seed = FeatureHubConfig("http://127.0.0.1:9/", ["a/b/c*d"])
    writer = open_store(url, seed, {"prefix": "p", "refresh_timeout": 3600.0})
    assert writer is not None
    repo_of(seed).notify("features", many(40))
    assert writer.flush(5)
    writer.close()
    fs.VERDICTS.clear()
    judged.calls = 0
    for starts in (1, 2):
        config = FeatureHubConfig("http://127.0.0.1:9/", ["a/b/c*d"])
        store = open_store(url, config, {"prefix": "p", "refresh_timeout": 3600.0})
        assert store is not None
        try:
            assert repo_of(config).known_features() == 40
        finally:
            store.close(flush_timeout=0)
        assert judged.calls == 40, f"start {starts} judged {judged.calls} entries, not 40"


def test_a_value_parsed_whole_is_remembered_by_entry_only_when_asked(judged: Counted) -> None:
    """A worker's start parses its value whole (entry_texts=False); remember_entry_texts, which
    the store thread calls right after, lets the next value be judged only where it differs."""
    states = many(50)
    fs.decode(value(states), 10**6, entry_texts=False)
    assert judged.calls == 50
    states[7] = feat("F007", 2)
    fs.decode(value(states), 10**6)
    assert judged.calls == 100, "nothing was remembered by entry text, so all 50 are judged"
    fs.VERDICTS.clear()
    judged.calls = 0
    first = value(many(50))
    start = fs.decode(first, 10**6, entry_texts=False)
    assert start.digest is None and start.verdicts is not None, \
        "a fresh process's start worked out a digest it has nothing to look up by"
    fs.remember_entry_texts(first, 10**6, start.verdicts)
    assert judged.calls == 50, "remembering the texts judged entries again"
    fs.decode(first, 10**6)
    assert judged.calls == 50, "the start's value, read again, was judged again"
    fs.decode(value(states), 10**6)
    assert judged.calls == 51, "more than the changed entry was judged"
    fs.remember_entry_texts(value(many(3)), 10**6)      # a value never judged: nothing to keep
    fs.remember_entry_texts(b"junk", 10**6)
    fs.remember_entry_texts(None, 10**6)
    assert judged.calls == 51


def test_after_a_store_start_a_changed_entry_is_the_only_one_judged(
        judged: Counted, tmp_path: Path) -> None:
    """The start parses whole; the store thread then remembers the entries by text, so the
    first change read afterwards judges the changed entry only."""
    url = f"file://{tmp_path}"
    seed = FeatureHubConfig("http://127.0.0.1:9/", ["a/b/c*d"])
    writer = open_store(url, seed, {"prefix": "p", "refresh_timeout": 3600.0, "push": False})
    assert writer is not None
    config = FeatureHubConfig("http://127.0.0.1:9/", ["a/b/c*d"])
    store = None
    try:
        repo_of(seed).notify("features", many(40))
        assert writer.flush(5)
        fs.VERDICTS.clear()
        judged.calls = 0
        store = open_store(url, config, {"prefix": "p", "refresh_timeout": 3600.0,
                                         "push": False})
        assert store is not None and judged.calls == 40
        wait_for(lambda: len(fs.VERDICTS) >= 40, 5,
                 what="the store thread to remember the start's entries")
        assert len(fs.VERDICTS) == 40
        repo_of(seed).notify("feature", feat("F011", 2))    # the writer judges it: once
        assert writer.flush(5)
        before = judged.calls
        assert store.refresh(5)
        assert repo_of(config).feature("F011").get_version == 2
        assert versions(config) == versions(seed), "the reader's whole state is the writer's"
        assert judged.calls == before + 1, \
            f"{judged.calls - before} entries judged for one changed entry"
    finally:
        for opened in (store, writer):
            if opened is not None:
                opened.close(flush_timeout=0)


def test_a_stores_verify_read_of_an_unchanged_state_judges_nothing(
        judged: Counted, tmp_path: Path) -> None:
    """The store's own full reads (a verify tick, a refresh) of the state it holds: nothing
    is judged, neither by decode (the value was judged before) nor by the listener."""
    config = FeatureHubConfig("http://127.0.0.1:9/", ["a/b/c*d"])
    store = open_store(f"file://{tmp_path}", config, {"prefix": "p", "refresh_timeout": 3600.0})
    assert store is not None
    try:
        repo_of(config).notify("features", many(40))
        assert store.flush(5)
        assert store.refresh(5)          # the first read of the value written: judged once
        calls, misses, hits = judged.calls, fs.VERDICTS.misses, fs.VERDICTS.hits
        reads = store.counters.reads
        for _ in range(3):
            assert store.refresh(5)
        assert store.counters.reads >= reads + 3, "the refreshes read nothing"
        assert judged.calls == calls, f"{judged.calls - calls} shape checks on unchanged reads"
        assert fs.VERDICTS.misses == misses, "an unchanged read missed the verdict cache"
        assert fs.VERDICTS.hits >= hits + 3 * 40
    finally:
        store.close(flush_timeout=0)


def test_a_values_fingerprint_is_worked_out_once_per_distinct_value(
        judged: Counted, fingerprinted: list[int]) -> None:
    made, real = fingerprinted, real_fingerprint
    states = many(20)
    first = fs.decode(value(states), 10**6)
    again = fs.decode(value(states), 10**6)
    assert first.fingerprint() == again.fingerprint() == real(first.placed.values())
    assert len(made) == 1, "the same value was fingerprinted again"
    assert again.agrees_with(first.fingerprint()) and not again.agrees_with(None)
    states[3] = feat("F003", 2)
    changed = fs.decode(value(states), 10**6)
    assert changed.fingerprint() == real(changed.placed.values()) != first.fingerprint()
    assert len(made) == 2


def test_a_stores_start_works_out_its_values_fingerprint_once(
        judged: Counted, tmp_path: Path, fingerprinted: list[int]) -> None:
    """A fresh worker's start checks the stored fingerprint on the store thread, and the
    value's digest is worked out there too: the check's fingerprint is remembered by it,
    so the store's next full read of the same value works out nothing again."""
    url = f"file://{tmp_path}"
    seed = FeatureHubConfig("http://127.0.0.1:9/", ["a/b/c*d"])
    writer = open_store(url, seed, {"prefix": "p", "refresh_timeout": 3600.0, "push": False})
    assert writer is not None
    repo_of(seed).notify("features", many(30))
    assert writer.flush(5)
    writer.close()
    fs.VERDICTS.clear()
    fingerprinted.clear()       # the writer's: only the reader's count
    made = fingerprinted
    config = FeatureHubConfig("http://127.0.0.1:9/", ["a/b/c*d"])
    store = open_store(url, config, {"prefix": "p", "refresh_timeout": 3600.0, "push": False})
    assert store is not None
    try:
        assert store.flush(5)       # the start's fingerprint check is done
        wait_for(lambda: len(fs.VERDICTS) >= 30, 5, what="the start value remembered")
        assert store.refresh(5)
        assert versions(config) == versions(seed)
        assert len(made) == 1, f"the start value's fingerprint was worked out {len(made)} times"
    finally:
        store.close(flush_timeout=0)


def test_a_vouched_entry_is_judged_again_after_one_use(judged: Counted) -> None:
    item = fs.decode(value([feat("A", 1)]), 10**6).features[0]
    assert fs.feature_problem(item) is None
    assert judged.calls == 1, "the replay of a just-decoded entry was judged again"
    item["strategies"] = 5      # nothing in the library does this; the vouch must not outlive
    assert fs.feature_problem(item) is not None
    assert fs.feature_problem(dict(item)) is not None


def test_the_vouch_stays_on_the_thread_that_decoded(judged: Counted) -> None:
    item = fs.decode(value([feat("A", 1)]), 10**6).features[0]
    item["strategies"] = 5
    found: list[str | None] = []
    other = threading.Thread(target=lambda: found.append(fs.feature_problem(item)))
    other.start()
    other.join(10)
    assert found and found[0] is not None


def test_the_cache_is_bounded_by_entries_and_characters() -> None:
    cache = VerdictCache(max_entries=3, max_chars=160)
    cache.remember([(f"t{i}", USABLE) for i in range(5)])
    assert len(cache) == 3 and cache.lookup(["t0", "t4"]) == [None, USABLE]
    cache.lookup(["t2"])                       # recently used: kept over t3
    cache.remember([("t5", USABLE)])
    assert cache.lookup(["t2", "t3"]) == [USABLE, None]
    cache.remember([("x" * 9, USABLE), ("y" * 11, USABLE)])   # 11 > 160 // 16: not kept
    assert cache.lookup(["x" * 9, "y" * 11]) == [USABLE, None]
    big = VerdictCache(max_entries=100, max_chars=160)
    big.remember([(f"{i:09}", USABLE) for i in range(40)])
    assert sum(len(t) for t in big._verdicts) <= 160


def test_a_fork_while_the_cache_is_locked_leaves_the_child_a_usable_cache() -> None:
    cache = VerdictCache()
    cache.remember([("t", USABLE)])
    with cache._lock:               # another thread mid-lookup when a prefork master forks
        pid = os.fork()
        if pid == 0:                # the child: a held lock would hang it (the alarm ends it)
            signal.alarm(5)
            os._exit(0 if cache.lookup(["t"]) == [USABLE] else 1)
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the cache's lock")
    assert os.waitstatus_to_exitcode(status) == 0
