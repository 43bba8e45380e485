"""``bench --quick``'s cold-start table says why a row has no figure instead of ``None``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).parent / "fh-prefork")


@pytest.mark.servers
def test_quick_cold_start_gives_a_reason_for_the_missing_memcached_figure(
        tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([EXE, "bench", "--quick", "--only", "cold", "--json", str(out)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["sections"]["cold"]["rows"]
    memcache = [r for r in rows if r["backend"] == "memcache"]
    if not memcache:
        pytest.skip("memcached is not installed: no memcached row")
    table = proc.stdout[proc.stdout.index("Cold start"):]
    memcache_line = next(line for line in table.splitlines() if line.startswith("memcache"))
    assert "None" not in memcache_line, memcache_line
    assert "not measured in --quick (the file row has it)" in memcache_line, memcache_line
    assert memcache[0]["worker_first_answer_ms_median"] is None   # the JSON keeps no figure
    file_row = next(r for r in rows if r["backend"] == "file")
    assert file_row["worker_first_answer_ms_median"] > 0
