"""``fh-prefork settings``, ``--help`` and ``fh-prefork demo --flips 2``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fh_prefork.cli import main
from fh_prefork.settings import SETTINGS

EXE = str(Path(sys.executable).parent / "fh-prefork")


def test_settings_table_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| Environment variable |")
    for setting in SETTINGS:
        assert f"`{setting.env}`" in out
    assert len(out.strip().splitlines()) == len(SETTINGS) + 2


@pytest.mark.parametrize("command", [[], ["status"], ["demo"], ["bench"], ["settings"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: fh-prefork" in capsys.readouterr().out


@pytest.mark.servers
def test_demo_two_flips_agree(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FEATUREHUB_", "FH_PREFORK_"))}
    proc = subprocess.run([EXE, "demo", "--flips", "2", "--interval", "0.5"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    agreed = re.findall(r"flip (\d): all 4 workers agree on NEW_CHECKOUT=(\w+) v(\d+) after",
                        proc.stdout)
    assert agreed == [("1", "True", "2"), ("2", "False", "3")], proc.stdout
    assert "sent on the Edge stream of worker" in proc.stdout
    assert "Everything stopped." in proc.stdout


@pytest.mark.servers
def test_demo_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    import signal

    from fh_prefork.testing.cluster import wait_until

    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([EXE, "demo", "--interval", "0.5"], stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: "flip 1: all" in log.read_text() or proc.poll() is not None, 120,
                   "the demo's first agreement")
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        text = log.read_text()
        assert "stopping" in text and "Everything stopped." in text
        master = re.search(r"gunicorn master (\d+)", text)
        assert master is not None
        pid = int(master.group(1))
        assert not Path(f"/proc/{pid}").exists() or \
            "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
