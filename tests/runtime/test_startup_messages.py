"""What a master says at start reaches the operator: a misspelled setting is named with the
closest known one, and a refusal reaches gunicorn's error log file as well as stderr."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fh_prefork import settings as s
from fh_prefork.testing.cluster import Cluster
from tests.support.procs import free_port

BASE = {"FEATUREHUB_EDGE_URL": "http://edge:8085", "FEATUREHUB_API_KEY": "p/env/c*s"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s, "_warned_unknown", set(), raising=False)


def test_a_misspelled_setting_is_named_with_the_closest_known_one(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fh_prefork"):
        loaded = s.load({**BASE, "FH_PREFORK_REFRESH_SECOND": "1"})
    assert loaded.refresh_seconds == 5.0   # ignored: the default applies, but not silently
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["fh_prefork: unknown setting FH_PREFORK_REFRESH_SECOND is ignored: "
                        "did you mean FH_PREFORK_REFRESH_SECONDS?"]


def test_each_unknown_variable_is_named_once_per_process(
        caplog: pytest.LogCaptureFixture) -> None:
    env = {**BASE, "FH_PREFORK_STOR": "none", "FH_PREFORK_ZZZZZZZZZ": "1"}
    with caplog.at_level(logging.WARNING, logger="fh_prefork"):
        s.load(env)
        s.load(env)     # every worker start loads again: no repeat
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "FH_PREFORK_STOR is ignored: did you mean FH_PREFORK_STORE?" in lines[0]
    assert "FH_PREFORK_ZZZZZZZZZ is ignored: known: FH_PREFORK_STORE" in lines[1]


def test_known_and_foreign_variables_are_not_warned_about() -> None:
    env = {**BASE, "FH_PREFORK_REFRESH_SECONDS": "1", "FEATUREHUB_POLL_INTERVAL": "5",
           "FEATUREHUB_WHATEVER": "x", "PATH": "/bin"}
    assert s.unknown_variables(env) == []


def _gunicorn(env_changes: dict[str, str], tmp_path: Path, *args: str
              ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FH_PREFORK", "FEATUREHUB"))}
    env.update({"FEATUREHUB_EDGE_URL": "http://127.0.0.1:9/",
                "FEATUREHUB_API_KEY": "portfolio/env/client*secret", "FH_PREFORK_STORE": "none",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": str(ROOT), **env_changes})
    command = Cluster("gunicorn", 1, env, port=free_port(), args=list(args)).command()
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)


@pytest.mark.servers
def test_the_refusal_and_the_typo_reach_gunicorns_error_logfile(tmp_path: Path) -> None:
    logfile = tmp_path / "error.log"
    result = _gunicorn({"FH_PREFORK_STORE": "memcache://host:notaport",
                        "FH_PREFORK_REFRESH_SECOND": "1"}, tmp_path,
                       "--error-logfile", str(logfile))
    assert result.returncode != 0
    logged = logfile.read_text()
    assert "[ERROR] fh_prefork: refusing to start: FH_PREFORK_STORE" in logged, logged
    assert ("[WARNING] fh_prefork: unknown setting FH_PREFORK_REFRESH_SECOND is ignored: "
            "did you mean FH_PREFORK_REFRESH_SECONDS?") in logged, logged
    # stderr still has the refusal, as one line of its own
    ours = [line for line in result.stderr.splitlines() if line.startswith("fh_prefork:")]
    assert len(ours) == 1 and "refusing to start: FH_PREFORK_STORE" in ours[0], result.stderr


@pytest.mark.servers
def test_with_the_error_log_on_stderr_the_refusal_is_one_line_there(tmp_path: Path) -> None:
    result = _gunicorn({"FH_PREFORK_STORE": "memcache://host:notaport"}, tmp_path)
    assert result.returncode != 0
    refusals = [line for line in result.stderr.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1, result.stderr
