"""The documents: docs/settings.md's tables are generated from the registry and kept
current, every job has its page, and every relative link in README.md and docs/ leads
somewhere.

`make readme` (``python -m tests.test_readme``) writes the settings tables again after a
setting changed; the hand-written text around them stays.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ochinai.cli import registry, settings_table
from ochinai.runtime.declare import Setting

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SETTINGS = ROOT / "docs" / "settings.md"
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
            f"## {title}",
            "",
            "| variable | flag | default | meaning |",
            "|---|---|---|---|",
            *(_row(s) for s in settings),
        ]
    return "\n".join([*parts, "", END])


def _current() -> tuple[str, str]:
    text = SETTINGS.read_text(encoding="utf-8")
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.DOTALL)
    assert match, f"docs/settings.md has no {BEGIN} ... {END} block"
    return text, match.group(0)


def test_the_settings_tables_are_generated_from_the_registry() -> None:
    """docs/settings.md lists every setting as the code declares it; `make readme` rewrites it."""
    _, block = _current()
    assert block == render(), "docs/settings.md's tables are out of date: run `make readme`"


def test_every_registered_job_has_its_page_and_its_console_script_in_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    for name in registry():
        page = ROOT / "docs" / "jobs" / f"{name}.md"
        assert page.is_file(), f"no {page.relative_to(ROOT)}"
        assert page.read_text(encoding="utf-8").startswith(f"# The {name} job\n")
        assert f"(docs/jobs/{name}.md)" in readme, f"README.md does not link docs/jobs/{name}.md"
        assert f"`ochinai-{name}`" in readme


# --- Links ---------------------------------------------------------------------------------

FENCE = re.compile(r"^ *(```|~~~).*?^ *\1", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`]+`")  # a code span may go on over a line end
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#* *$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are no links."""
    return CODE.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped but `-` and `_`,
    each space a `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file, a repeated one numbered as GitHub does (-1, -2)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_anchor_rule_is_githubs() -> None:
    assert anchor("Check a deployment: `ochinai doctor`") == "check-a-deployment-ochinai-doctor"
    assert anchor("Every job (the runtime)") == "every-job-the-runtime"
    assert anchor("runbook-ochinaijobstale") == "runbook-ochinaijobstale"
    assert anchor("失敗したとき：どこを見るか") == "失敗したときどこを見るか"


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_leads_somewhere(document: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(document.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, fragment = target.partition("#")
        found = (document.parent / path).resolve() if path else document
        if not found.exists():
            broken.append(f"{target}: no such file")
        elif fragment and (found.suffix != ".md" or fragment not in anchors(found)):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"


def test_each_alert_rules_runbook_is_a_heading_of_the_operating_guide() -> None:
    rules = (ROOT / "k8s" / "monitoring" / "ochinai-rules.yaml").read_text(encoding="utf-8")
    runbooks = re.findall(r"runbook: docs/operating\.md#(\S+)", rules)
    assert runbooks
    assert set(runbooks) <= anchors(ROOT / "docs" / "operating.md")


if __name__ == "__main__":
    text, block = _current()
    SETTINGS.write_text(text.replace(block, render()), encoding="utf-8")
    print(f"wrote the settings tables of {SETTINGS.relative_to(ROOT)}")
