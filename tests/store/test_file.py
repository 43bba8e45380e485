"""Embedded-file-only behaviour: privacy of the folder, dead lock holders, damaged files."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from fh_prefork import FileSessionStore
from fh_prefork.store.core import NO_STATE
from fh_prefork.store.file import FileBackend, default_directory
from tests.conftest import make_config
from tests.support.procs import wait_for
from tests.support.stores import feat, repo_of, write_and_close


def test_folder_is_0700_and_file_0600(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    config = make_config()
    store = FileSessionStore(folder, config)
    write_and_close(store, config, "feature", feat("A", 1))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    data = folder / "featurehub_env-test.json"
    assert stat.S_IMODE(data.stat().st_mode) == 0o600
    assert json.loads(data.read_bytes()) == [feat("A", 1)]


def test_default_directory_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_directory() == tmp_path / "fh-prefork"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert str(os.geteuid()) in default_directory().name


def test_folder_writable_by_others_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ValueError, match="writable by group or others"):
        FileSessionStore(folder, make_config())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a file to another user")
def test_file_owned_by_another_user_is_refused_while_running(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    config = make_config()
    store = FileSessionStore(folder, config, {"refresh_timeout": 0.1})
    try:
        repo_of(config).notify("feature", feat("A", 1))
        assert store.flush(2)
        data = folder / "featurehub_env-test.json"
        planted = folder / "planted"
        planted.write_text(json.dumps([feat("A", 99, False)]))  # an attacker's flags...
        os.chown(planted, 65534, 65534)                          # ...in a file they own,
        os.rename(planted, data)        # put in place whole: the store never sees half of it
        wait_for(lambda: not store.status()["healthy"], 3, what="the store to refuse the file")
        assert "owned by uid 65534" in (store.status()["last_error"] or "")
        assert repo_of(config).feature("A").get_version == 1, "foreign flags must not be served"
    finally:
        store.close(flush_timeout=0)
    with pytest.raises(ValueError, match="owned by uid 65534"):
        FileBackend(folder, "featurehub_env-test")


def _hold_lock_and_die(folder: str, ready: Any) -> None:
    backend = FileBackend(Path(folder), "featurehub_env-test")
    backend._locked().__enter__()
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_lock_of_a_writer_killed_with_sigkill_does_not_block_others(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_lock_and_die, args=(str(tmp_path), ready))
    proc.start()
    assert ready.wait(30)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    config = make_config()
    store = FileSessionStore(tmp_path, config)
    try:
        started = time.monotonic()
        repo_of(config).notify("feature", feat("AFTER", 1))
        assert store.flush(2)
        assert time.monotonic() - started < 1.0
    finally:
        store.close()


def test_deleted_file_is_seeded_again_from_memory(tmp_path: Path) -> None:
    config = make_config()
    store = FileSessionStore(tmp_path, config, {"refresh_timeout": 0.1})
    try:
        repo_of(config).notify("features", [feat("A", 2), feat("B", 1)])
        assert store.flush(2)
        data = tmp_path / "featurehub_env-test.json"
        data.unlink()
        wait_for(data.exists, 3, what="file written again")
        assert {f["id"] for f in json.loads(data.read_bytes())} == {"id-A", "id-B"}
    finally:
        store.close()


def test_truncated_file_is_repaired_from_memory(tmp_path: Path) -> None:
    config = make_config()
    store = FileSessionStore(tmp_path, config, {"refresh_timeout": 0.1})
    try:
        repo_of(config).notify("features", [feat("A", 2)])
        assert store.flush(2)
        data = tmp_path / "featurehub_env-test.json"
        with open(data, "r+b") as f:
            f.truncate(7)
        wait_for(lambda: _parses(data), 3, what="file repaired")
        assert json.loads(data.read_bytes()) == [feat("A", 2)]
        assert repo_of(config).feature("A").get_version == 2
    finally:
        store.close()


def test_state_survives_all_processes(tmp_path: Path) -> None:
    config = make_config()
    store = FileSessionStore(tmp_path, config)
    repo_of(config).notify("feature", feat("KEPT", 1))
    store.close(flush_timeout=2)
    later = make_config()
    FileSessionStore(tmp_path, later).close()
    assert repo_of(later).feature("KEPT").is_enabled


def test_idle_tick_is_one_stat_no_read(tmp_path: Path) -> None:
    config = make_config()
    store = FileSessionStore(tmp_path, config, {"refresh_timeout": 0.02, "verify_every": 1000})
    try:
        repo_of(config).notify("feature", feat("A", 1))
        assert store.flush(2)
        reads = store.counters.reads
        ticks = store.counters.refreshes
        wait_for(lambda: store.counters.refreshes >= ticks + 10, 5, what="10 ticks")
        assert store.counters.reads == reads
    finally:
        store.close()


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_bytes())
        return True
    except ValueError:
        return False


def test_an_empty_store_is_a_problem_only_after_its_own_longer_grace(tmp_path: Path) -> None:
    """A leader-mode follower gives a new leader longer to fill an empty store than it
    gives any other problem (runtime: a period plus NEW_LEADER_SECONDS, against one)."""
    config = make_config()
    store = FileSessionStore(tmp_path / "store", config)
    try:
        assert store.state_problem(min_age=0, absent_min_age=30) is None
        assert store.state_problem(min_age=30, absent_min_age=0) == NO_STATE
        assert store.state_problem(min_age=0) == NO_STATE
    finally:
        store.close(flush_timeout=0)
    write_and_close(FileSessionStore(tmp_path / "store", config), config, "feature",
                    feat("A", 1))
    store = FileSessionStore(tmp_path / "store", config)
    try:
        assert store.state_problem(min_age=0, absent_min_age=0) is None
    finally:
        store.close(flush_timeout=0)
