"""``fh-prefork bench --only openfeature``: the section runs, measures, and lands in the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fh_prefork.bench.report import SECTIONS

#: the benchmark's OpenFeature section starts real workers
pytestmark = pytest.mark.servers

EXE = str(Path(sys.executable).parent / "fh-prefork")


def test_openfeature_bench_section(tmp_path: Path) -> None:
    assert "openfeature" in SECTIONS
    out = tmp_path / "bench.json"
    proc = subprocess.run([EXE, "bench", "--quick", "--only", "openfeature", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    section = json.loads(out.read_text())["sections"]["openfeature"]
    assert "error" not in section and "note" not in section, section
    cases = {(row["case"], row["read"].split(".")[0]) for row in section["rows"]}
    assert cases == {(case, via) for case in ("flag", "targeted", "third")
                     for via in ("fh_prefork", "provider", "client")}
    assert all(row["ns"] > 0 for row in section["rows"])
    assert section["client_ratio"] > 0 and section["provider_ratio"] > 0
    assert "OpenFeature resolution cost" in proc.stdout
