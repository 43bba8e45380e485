"""Docs that cannot drift: the settings reference's tables are generated from the declarations
(docs/hooks.py rebuilds them at every site build; this checks the page's own copy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fh_prefork.cli import generated_readme

README = Path(__file__).resolve().parents[2] / "docs" / "reference" / "settings.md"


def test_readme_tables_match_the_declarations() -> None:
    text = README.read_text()
    assert generated_readme(text) == text, (
        "docs/reference/settings.md's generated tables differ from fh_prefork/settings.py and "
        "fh_prefork/store/options.py: run "
        "`fh-prefork settings --readme docs/reference/settings.md`")


def test_a_stale_table_is_detected_and_rebuilt() -> None:
    stale = README.read_text().replace("| `FH_PREFORK_PREFIX` |", "| `FH_PREFORK_PREFIXX` |")
    assert generated_readme(stale) == README.read_text()


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no generated block"):
        generated_readme("# nothing here\n")
