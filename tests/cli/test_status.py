"""``fh-prefork status`` against a real memcached and the file store: output and exit codes."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client

from fh_prefork.cli import main
from fh_prefork.store import open_store
from fh_prefork.testing.edge_simulator import make_feature
from tests.conftest import API_KEY, make_config
from tests.support.memcached import Memcached
from tests.support.procs import free_port

ENV = "env-test"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, *args, "--json")
    return code, json.loads(out)


def fill(url: str, prefix: str, n: int = 2) -> None:
    config = make_config()
    store = open_store(url, config, {"prefix": prefix, "refresh_timeout": 60.0})
    assert store is not None
    try:
        config.repository().notify("features", [make_feature(f"F{i}", i % 2 == 0, 3 + i)
                                                for i in range(n)])
        assert store.flush(timeout=10)
    finally:
        store.close(flush_timeout=0)


def test_memcache_empty_then_healthy_then_inconsistent(
        capsys: pytest.CaptureFixture[str], memcached: Memcached, prefix: str) -> None:
    args = ("--store", memcached.url, "--api-key", API_KEY, "--prefix", prefix)
    code, report = run_json(capsys, *args)
    assert code == 3 and report["reachable"] and not report["present"]

    fill(memcached.url, prefix)
    code, report = run_json(capsys, *args)
    assert code == 0, report["problems"]
    assert report["healthy"] and report["fingerprint_ok"]
    assert report["fingerprint"] == report["stored_fingerprint"]
    assert [(f["key"], f["version"], f["value"]) for f in report["features"]] == \
        [("F0", 3, True), ("F1", 4, False)]
    assert report["bytes"] > 0 and report["age_seconds"] is None and report["leader"] is None

    code, out, _ = run(capsys, *args)
    assert code == 0
    assert "healthy" in out and "F0" in out and "matches the data" in out and "unknown" in out

    client = Client(("127.0.0.1", memcached.port))
    try:
        client.set(f"{prefix}_{ENV}_leader", json.dumps(  # stored before the CLI reads it
            {"holder": "w-1", "host": "web-1", "pid": 4242, "expires_at": time.time() + 9}),
            noreply=False)
        code, report = run_json(capsys, *args)
        assert code == 0 and report["leader"]["pid"] == 4242 and not report["leader"]["expired"]
        code, out, _ = run(capsys, *args)
        assert "leader lease: w-1 (host web-1, pid 4242, expires in" in out

        client.set(f"{prefix}_{ENV}_sha", b"0" * 64, noreply=False)
        code, report = run_json(capsys, *args)
        assert code == 3 and report["fingerprint_ok"] is False
        assert any("fingerprint" in p for p in report["problems"])

        client.set(f"{prefix}_{ENV}", b"\x80\x04pickled?", noreply=False)
        code, report = run_json(capsys, *args)
        assert code == 3 and any("junk" in p for p in report["problems"])
    finally:
        client.close()


def test_memcache_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, "--store", f"memcache://127.0.0.1:{free_port()}",
                            "--api-key", API_KEY, "--timeout", "0.5")
    assert code == 1 and not report["reachable"] and report["problems"]
    code, out, _ = run(capsys, "--store", f"memcache://127.0.0.1:{free_port()}",
                       "--api-key", API_KEY, "--timeout", "0.5")
    assert code == 1 and "UNREACHABLE" in out


def test_file_store(capsys: pytest.CaptureFixture[str], tmp_path: Path, prefix: str) -> None:
    url = f"file://{tmp_path}/store"
    args = ("--store", url, "--api-key", API_KEY, "--prefix", prefix)
    code, report = run_json(capsys, *args)
    assert code == 3 and not (tmp_path / "store").exists()  # status never creates anything

    fill(url, prefix, n=3)
    code, report = run_json(capsys, *args)
    assert code == 0, report["problems"]
    assert report["feature_count"] == 3 and report["fingerprint"]
    assert 0 <= report["age_seconds"] < 60

    lease = tmp_path / "store" / f"{prefix}_{ENV}.leader"
    lease.write_text(json.dumps({"holder": "h", "host": "x", "pid": 1,
                                 "expires_at": time.time() - 5}))
    lease.chmod(0o600)
    code, report = run_json(capsys, *args)
    assert code == 0 and report["leader"] is None, "a record nobody holds is a past term's"
    with open(lease, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)      # a leader holds the lock for its whole term
        code, report = run_json(capsys, *args)
    assert code == 0 and report["leader"]["holder"] == "h"

    data = tmp_path / "store" / f"{prefix}_{ENV}.json"
    data.write_text('[{"id": "x"}, "junk"]')
    code, report = run_json(capsys, *args)
    assert code == 3 and report["feature_count"] == 0

    (tmp_path / "store").chmod(0o777)  # the store refuses a folder others can write
    try:
        code, report = run_json(capsys, *args)
        assert code == 1 and "writable by group or others" in report["problems"][0]
    finally:
        (tmp_path / "store").chmod(0o700)


@pytest.mark.parametrize("args, message", [
    (["--store", "file:///tmp/x"], "--api-key"),
    (["--store", "file:///tmp/x", "--api-key", "p/env/server-key"], "client-evaluated"),
    (["--store", "bogus://x", "--api-key", API_KEY], "unknown store"),
    (["--store", "file:///tmp/x", "--api-key", API_KEY, "--prefix", "a b"], "FH_PREFORK_PREFIX"),
])
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                              args: list[str], message: str) -> None:
    monkeypatch.delenv("FEATUREHUB_API_KEY", raising=False)
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err


def test_console_script_json(memcached: Memcached, prefix: str) -> None:
    fill(memcached.url, prefix)
    exe = Path(sys.executable).parent / "fh-prefork"
    proc = subprocess.run([str(exe), "status", "--store", memcached.url, "--api-key", API_KEY,
                           "--prefix", prefix, "--json"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["feature_count"] == 2
