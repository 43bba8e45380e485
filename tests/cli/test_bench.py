"""``fh-prefork bench --quick``: every section runs and lands in the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fh_prefork.bench.report import SECTIONS, percentile, table

EXE = str(Path(sys.executable).parent / "fh-prefork")


def test_percentile_and_table() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    text = table("T", [("a", "a"), ("b", "b")], [{"a": "x", "b": 1.23456}])
    assert "1.235" in text and text.startswith("T\n-")


@pytest.mark.servers
def test_bench_quick_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([EXE, "bench", "--quick", "--json", str(out)], capture_output=True,
                          text=True, timeout=280, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["meta"]["quick"] is True and not doc["meta"]["failures"]
    sections = doc["sections"]
    assert set(sections) == set(SECTIONS)
    for name in SECTIONS:
        assert "error" not in sections[name], sections[name]
    for row in sections["storm"]["rows"]:
        assert row["lost_updates"] == 0 and row["gave_up"] == 0 and row["fingerprint_ok"]
    for row in sections["same"]["rows"]:
        assert row["writes_per_update"] >= 1
    for row in sections["propagation"]["rows"]:
        assert row["missed"] == 0 and row["p99_seconds"] < 15
    assert all(r["constructor_ms_median"] > 0 for r in sections["cold"]["rows"])
    # the test group installs orjson: each row also has the start without it
    assert all(r["json_parser"].startswith("orjson ") and r["standard_library_json_ms_median"] > 0
               for r in sections["cold"]["rows"])
    assert {r["variant"].split(" ")[0] for r in sections["memory"]["rows"]} == \
        {"fh_prefork", "plain"}
    assert sections["read"]["ratio"] > 0
    push = sections["push"]["rows"]   # leader mode: every follower saw every update
    assert {(r["backend"], r["mode"]) for r in push} >= {("file", "push"), ("file", "polling")}
    assert all(r["missed"] == 0 for r in push)
    every = sections["edge"]["rows"][0]
    assert every["mode"] == "every" and every["open_streams"] == every["workers"]
    assert "Compare-and-set storm" in proc.stdout and "Flag read cost" in proc.stdout
    assert "[bench" in proc.stderr  # progress goes to stderr
