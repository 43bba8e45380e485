#!/usr/bin/env python3
"""Write docs/edge-protocol-table.md from the Edge conformance tests' own rows.

``scripts/conformance_table.py`` writes the table (protocol point | what Edge does | what
fh-prefork does); ``--run`` runs ``tests/edge/test_conformance.py`` first (real gunicorn workers,
a few minutes) and adds whether each row's test passes. The rows live in ``ROWS`` in that test
module, so the table cannot say what no test checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.edge.test_conformance import main  # noqa: E402  # after the path is set

if __name__ == "__main__":
    raise SystemExit(main(["--out", str(ROOT / "docs" / "edge-protocol-table.md"),
                           *sys.argv[1:]]))
