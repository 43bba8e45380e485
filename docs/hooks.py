"""MkDocs hooks: the pages that are generated from the code cannot drift from it.

* ``reference/settings.md``: the settings and store-options tables are rebuilt from
  ``fh_prefork/settings.py`` and ``fh_prefork/store/options.py`` at every build
  (``fh_prefork.cli.generated_readme``, the generator ``fh-prefork settings`` uses).
* ``examples.md``: the examples table and steps come from ``examples/examples.json``,
  which ``scripts/try_examples.py`` runs in CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def examples_table() -> str:
    catalog = json.loads((ROOT / "examples" / "examples.json").read_text())
    rows = [f"| `{e['folder']}/` | {e['server']} | {e['what']} | `{e['install']}` | "
            f"`{e['start']}` |" for e in catalog["examples"]]
    return "\n".join(rows)


def examples_steps() -> str:
    catalog = json.loads((ROOT / "examples" / "examples.json").read_text())
    common = catalog["common"]
    first = catalog["examples"][0]
    return "\n".join([
        "python3 -m venv .venv && . .venv/bin/activate",
        f"{first['install']:<48}# the example's install line (table above)",
        common["edge"],
        f"cd {first['folder']}                              # from the repository's folder",
        common["env"],
        f"{first['start']} &",
        f"{common['check']:<48}# {{\"enabled\": true, ...}}",
        common["flip"],
        f"{common['check']:<48}# every worker now serves false",
    ])


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    path = page.file.src_uri
    if path == "reference/settings.md":
        from fh_prefork.cli import generated_readme

        return generated_readme(markdown)
    if path == "examples.md":
        markdown = markdown.replace(
            "<!-- examples: table (rendered from examples/examples.json by docs/hooks.py) -->",
            examples_table())
        markdown = markdown.replace(
            "<!-- examples: steps (rendered from examples/examples.json by docs/hooks.py) -->",
            examples_steps())
    return markdown
