"""No Docker engine runs here: check compose.yaml and the Dockerfile against the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def test_compose_file_is_consistent() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"memcached", "edge", "web", "web-uwsgi"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, name
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve().is_file()
    for name in ("web", "web-uwsgi"):
        env = services[name]["environment"]
        assert env["FH_PREFORK_STORE"] == "memcache://memcached:11211"
        assert {"FEATUREHUB_EDGE_URL", "FEATUREHUB_API_KEY"} <= set(env)
        assert services[name]["depends_on"]["memcached"]["condition"] == "service_healthy"
    assert "fh_prefork.testing.edge_simulator" in services["edge"]["command"]
    ini = services["web-uwsgi"]["command"][-1]
    assert (ROOT / ini.removeprefix("/app/")).is_file()


def test_dockerfile_references_existing_files() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert re.search(r"^USER app$", text, re.M) and "HEALTHCHECK" in text
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
    workdir = re.findall(r"^WORKDIR (.+)$", text, re.M)[-1]
    cmd = re.search(r'^CMD \["gunicorn", "-c", "([^"]+)"', text, re.M)
    assert cmd is not None
    assert (ROOT / workdir.removeprefix("/app/") / cmd.group(1)).is_file()


def test_healthcheck_script_compiles() -> None:
    subprocess.run([sys.executable, "-m", "py_compile", str(DOCKER / "healthcheck.py")],
                   check=True)
