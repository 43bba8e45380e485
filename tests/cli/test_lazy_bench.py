"""Every CLI run but ``bench`` and ``demo`` leaves the benchmark unloaded: ``fh-prefork status``
is the Docker health check, run every few seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from fh_prefork.cli import main
code = main(sys.argv[1:])
print(json.dumps(sorted(m for m in sys.modules if m.startswith("fh_prefork.bench"))))
"""


def loaded_by(tmp_path: Path, *argv: str) -> list[str]:
    run = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    last = run.stdout.strip().splitlines()[-1]
    loaded: list[str] = json.loads(last)
    return loaded


def test_status_does_not_load_the_benchmark(tmp_path: Path) -> None:
    loaded = loaded_by(tmp_path, "status", "--json", "--store", f"file://{tmp_path}/store",
                       "--api-key", "p/env/c*s")
    assert loaded == ["fh_prefork.bench", "fh_prefork.bench.sections"], \
        "only the section names (for the parser) may load"


def test_settings_does_not_load_the_benchmark(tmp_path: Path) -> None:
    assert "fh_prefork.bench.report" not in loaded_by(tmp_path, "settings")
