"""What a release needs, checked on the files: one version, the licence, the changelog, no
development tools in a published extra, mypy on the lowest Python, and every example in the
docs' table with its install line."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import fh_prefork

ROOT = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the suite runs on 3.11 here
    tomllib = pytest.importorskip("tomli")


def pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f))


def test_the_version_is_written_once() -> None:
    project = pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "fh_prefork.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", fh_prefork.__version__)


def test_licence_changelog_and_contributing_exist() -> None:
    project = pyproject()["project"]
    assert project["license"] == "MIT"              # an SPDX expression
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in changelog and "## [Unreleased]" in changelog
    assert f"## [{fh_prefork.__version__}]" in changelog
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    assert "-m servers" in contributing and "scripts/test" in contributing


def test_metadata_a_registry_shows() -> None:
    project = pyproject()["project"]
    classifiers = set(project["classifiers"])
    lowest = project["requires-python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {lowest}" in classifiers
    assert {"Typing :: Typed", "Framework :: Pytest"} <= classifiers
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(project["urls"])


def test_development_tools_are_a_group_not_a_published_extra() -> None:
    data = pyproject()
    extras = data["project"]["optional-dependencies"]
    published = {re.split(r"[<>=\[ ]", r)[0] for reqs in extras.values() for r in reqs}
    assert not published & {"mypy", "ruff", "django", "pytest", "flask", "mkdocs"}, published
    groups = data["dependency-groups"]
    names = json.dumps(groups)
    for tool in ("pytest", "mypy", "ruff", "mkdocs-material", "mkdocstrings", "build", "twine"):
        assert tool in names, tool
    assert "--group dev" in (ROOT / "scripts" / "test").read_text()


def test_mypy_targets_the_lowest_supported_python() -> None:
    data = pyproject()
    assert data["tool"]["mypy"]["python_version"] == \
        data["project"]["requires-python"].removeprefix(">=")


def test_every_example_is_in_the_table_with_its_install_line() -> None:
    catalog = json.loads((ROOT / "examples" / "examples.json").read_text())
    folders = {p.name for p in (ROOT / "examples").iterdir() if p.is_dir()
               and not p.name.startswith((".", "_"))}
    listed = {Path(e["folder"]).name for e in catalog["examples"]}
    assert listed == folders
    for example in catalog["examples"]:
        assert (ROOT / example["folder"]).is_dir()
        assert re.match(r"pip install 'fh-prefork\[[a-z,]+\]'( [a-z0-9-]+)+$",
                        example["install"]), example["install"]
    page = (ROOT / "docs" / "examples.md").read_text()
    assert "<!-- examples: table" in page and "<!-- examples: steps" in page


def test_the_readme_is_short_and_starts_with_what_a_user_needs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    first_screen = "\n".join(readme.splitlines()[:60])
    for needed in ("pip install", "pip install -e", "fh-prefork demo"):
        assert needed in first_screen, needed
    hooks = "from fh_prefork.gunicorn import child_exit, on_starting, post_fork, worker_exit"
    assert hooks in readme
    assert "import = fh_prefork.uwsgi" in readme and "bash scripts/test" in readme
    assert readme.index("## Install") < readme.index("## Development")
