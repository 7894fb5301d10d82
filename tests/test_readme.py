"""The README's settings tables are generated from the registry; this test keeps them current.

`make readme` (``python -m tests.test_readme``) writes them again after a setting changed.
"""

from __future__ import annotations

import re
from pathlib import Path

from ochinai.cli import registry, settings_table
from ochinai.runtime.config import Setting

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- settings tables: begin (make readme) -->", "<!-- settings tables: end -->"
TITLES = {"every job": "Every job (the runtime)", "status": "`ochinai status`"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(setting: Setting) -> str:
    flag = f"`{setting.flag}`" if setting.flag else "(secret: environment only)"
    if setting.required:
        default = "(required)"
    elif setting.default is None:
        default = "unset"
    else:
        default = f"`{setting.default}`" if setting.default else "(empty)"
    meaning = setting.help if setting.form == "text" else f"{setting.help}; {setting.form}"
    return f"| `{setting.env}` | {flag} | {_cell(default)} | {_cell(meaning)} |"


def render() -> str:
    """The settings tables, one per reader: the runtime, status, then each job and action."""
    groups: dict[str, list[Setting]] = {}
    for owner, setting in settings_table(registry()):
        groups.setdefault(owner, []).append(setting)
    parts = [BEGIN]
    for owner, settings in groups.items():
        title = TITLES.get(owner, f"`ochinai {owner}`")
        parts += [
            "",
            f"#### {title}",
            "",
            "| variable | flag | default | meaning |",
            "|---|---|---|---|",
            *(_row(s) for s in settings),
        ]
    return "\n".join([*parts, "", END])


def _current() -> tuple[str, str]:
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.DOTALL)
    assert match, f"README.md has no {BEGIN} ... {END} block"
    return text, match.group(0)


def test_the_readme_settings_tables_are_generated_from_the_registry() -> None:
    """The README lists every setting as the code declares it; `make readme` rewrites it."""
    _, block = _current()
    assert block == render(), "README.md's settings tables are out of date: run `make readme`"


def test_the_readme_names_every_registered_job() -> None:
    """Each registered job has its section and its console script in the README."""
    text, _ = _current()
    for name in registry():
        assert f"## The {name} job" in text and f"`ochinai-{name}`" in text


if __name__ == "__main__":
    text, block = _current()
    README.write_text(text.replace(block, render()), encoding="utf-8")
    print(f"wrote the settings tables of {README.name}")
