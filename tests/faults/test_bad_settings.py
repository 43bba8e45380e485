"""Bad settings stop the master at start with one clear line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fh_prefork.testing.cluster import Cluster
from tests.support.matrix import chosen
from tests.support.procs import free_port

#: each case starts a real gunicorn or uWSGI master (which must refuse to start)
pytestmark = pytest.mark.servers

GOOD = {
    "FEATUREHUB_EDGE_URL": "http://127.0.0.1:9/",
    "FEATUREHUB_API_KEY": "portfolio/env/client*secret",
    "FH_PREFORK_STORE": "none",
}

CASES: dict[str, tuple[dict[str, str | None], str]] = {
    "malformed-store-url": ({"FH_PREFORK_STORE": "memcache://host:notaport"}, "FH_PREFORK_STORE"),
    "unknown-scheme": ({"FH_PREFORK_STORE": "bogus://localhost:6379"}, "FH_PREFORK_STORE"),
    "invalid-prefix": ({"FH_PREFORK_PREFIX": "bad prefix"}, "FH_PREFORK_PREFIX"),
    "zero-refresh": ({"FH_PREFORK_REFRESH_SECONDS": "0"}, "FH_PREFORK_REFRESH_SECONDS"),
    "negative-refresh": ({"FH_PREFORK_REFRESH_SECONDS": "-1"}, "FH_PREFORK_REFRESH_SECONDS"),
    "server-evaluated-key": ({"FEATUREHUB_API_KEY": "portfolio/env/serversecret"},
                             "FEATUREHUB_API_KEY"),
    "missing-key": ({"FEATUREHUB_API_KEY": None}, "FEATUREHUB_API_KEY"),
    "bad-edge-mode": ({"FH_PREFORK_EDGE_MODE": "some"}, "FH_PREFORK_EDGE_MODE"),
}


def run_master(kind: str, env_changes: dict[str, str | None], tmp_path: Path
               ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FH_PREFORK", "FEATUREHUB"))}
    env.update(GOOD)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    command = Cluster(kind, 2, env, port=free_port()).command()
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)


#: Each bad value's message is proven in-process (tests/runtime/test_settings.py); a real
#: master adds how it refuses: one line, no worker, no traceback. Each kind meets a store URL
#: error and a setting error (and a missing one); FH_PREFORK_FULL_MATRIX=1 runs all 16.
KIND_CASES = chosen(["gunicorn", "uwsgi"], list(CASES), [
    ("gunicorn", "malformed-store-url"), ("gunicorn", "missing-key"),
    ("gunicorn", "invalid-prefix"), ("gunicorn", "server-evaluated-key"),
    ("uwsgi", "unknown-scheme"), ("uwsgi", "zero-refresh"),
    ("uwsgi", "negative-refresh"), ("uwsgi", "bad-edge-mode"),
])


@pytest.mark.parametrize("kind, case", KIND_CASES)
def test_master_refuses_to_start_with_one_line(kind: str, case: str, tmp_path: Path) -> None:
    changes, variable = CASES[case]
    result = run_master(kind, changes, tmp_path)
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if line.startswith("fh_prefork:")]
    assert result.returncode != 0, output
    assert len(ours) == 1, output
    assert variable in ours[0] and "refusing to start" in ours[0], ours[0]
    assert "Traceback" not in output, output
    assert "Booting worker" not in output and "spawned uWSGI worker" not in output
