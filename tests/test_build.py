"""The pinned build: the lock files agree with pyproject.toml, each other and the code."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ochinai.jobs.report.workbook import TESTED_XLSXWRITER

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(lock: str) -> dict[str, set[str]]:
    """Package -> pinned versions (two where a marker splits them) of a lock file."""
    found: dict[str, set[str]] = {}
    for line in (ROOT / lock).read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            found.setdefault(canonicalize_name(match.group(1)), set()).add(match.group(2))
    return found


def project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return data


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    """Each dependency of pyproject.toml has a pin in requirements.lock that its range allows."""
    locked = pins("requirements.lock")
    for spec in project()["dependencies"]:  # type: ignore[attr-defined]
        req = Requirement(spec)
        versions = locked.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is not in requirements.lock: run `make lock`"
        for version in versions:
            assert req.specifier.contains(version, prereleases=True), (req, version)


def test_every_test_tool_is_pinned_and_the_runtime_pins_agree() -> None:
    """The test lock pins each test extra, and every runtime pin at the same version."""
    runtime, test = pins("requirements.lock"), pins("requirements-test.lock")
    for spec in project()["optional-dependencies"]["test"]:  # type: ignore[index]
        req = Requirement(spec)
        versions = test.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is not in requirements-test.lock: run `make lock`"
        assert all(req.specifier.contains(v, prereleases=True) for v in versions), req
    for name, versions in runtime.items():
        assert test.get(name) == versions, f"{name}: {versions} vs {test.get(name)}"


def test_the_local_lock_pins_what_run_local_needs_as_the_others_do() -> None:
    """make run-local's lock pins the local extra, every runtime pin at the same version,
    and each of its pins is the test lock's too (make test installs on top of it)."""
    runtime, local = pins("requirements.lock"), pins("requirements-local.lock")
    test = pins("requirements-test.lock")
    extras = project()["optional-dependencies"]  # type: ignore[index]
    for spec in extras["local"]:  # type: ignore[index]
        req = Requirement(spec)
        versions = local.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is not in requirements-local.lock: run `make lock`"
        assert all(req.specifier.contains(v, prereleases=True) for v in versions), req
        assert spec in extras["test"], f"{spec}: the tests start the local servers too"  # type: ignore[index]
    for name, versions in runtime.items():
        assert local.get(name) == versions, f"{name}: {versions} vs {local.get(name)}"
    for name, versions in local.items():
        assert test.get(name) == versions, f"{name}: {versions} vs {test.get(name)}"


def test_every_pin_carries_hashes() -> None:
    """pip installs the lock files with --require-hashes: each pin is followed by hashes."""
    for lock in ("requirements.lock", "requirements-local.lock", "requirements-test.lock"):
        text = (ROOT / lock).read_text(encoding="utf-8")
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
        for block in blocks:
            assert "--hash=sha256:" in block, f"{lock}: {block.splitlines()[0]} has no hash"


def test_the_fast_detail_path_was_tested_with_the_pinned_xlsxwriter() -> None:
    """The xlsxwriter the lock pins is the one jobs/report/workbook.py names as tested."""
    assert pins("requirements.lock")["xlsxwriter"] == {TESTED_XLSXWRITER}


def test_the_lock_files_are_what_make_install_and_the_image_use() -> None:
    """make install-local installs the runtime lock, then the local lock's additions; make
    install the test lock's on top: every package once. The Dockerfile, the runtime lock."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "install_lock.py $(LOCK) --log" in makefile
    assert "install_lock.py $(LOCAL_LOCK) --skip $(LOCK) --log" in makefile
    assert "install_lock.py $(TEST_LOCK) --skip $(LOCAL_LOCK) --log" in makefile
    assert "TEST_LOCK  := requirements-test.lock" in makefile
    assert "LOCAL_LOCK := requirements-local.lock" in makefile
    assert "\nrun-local: $(LOCAL_STAMP)\n" in makefile
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "--no-deps ./" in dockerfile

    sys.path.insert(0, str(ROOT / "docker"))
    try:
        import install_lock
    finally:
        sys.path.remove(str(ROOT / "docker"))
    names = ("requirements.lock", "requirements-local.lock", "requirements-test.lock")
    locks = [ROOT / name for name in names]
    installed: list[str] = []
    for before, lock in zip([None, *locks], locks, strict=False):
        found = install_lock.requirements(lock)
        skipped = install_lock.requirements(before) if before else {}
        assert set(skipped) <= set(found), f"{lock.name} lacks some of {before}"
        todo = {name: lines for name, lines in found.items() if name not in skipped}
        for _label, lines in install_lock.stages(todo):
            names = [line.split("==")[0].lower() for line in lines if "==" in line]
            installed += names
    final = install_lock.requirements(locks[-1])
    assert sorted(set(installed)) == sorted(final)
    # numpy is pinned twice (per Python version), every other package once
    assert len(installed) == sum(len([x for x in v if "==" in x]) for v in final.values())


def test_the_changelog_has_the_version_and_the_upgrade_notes_are_in_the_operating_guide() -> None:
    from ochinai import __version__

    root = Path(__file__).resolve().parent.parent
    changelog = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(
        r"^## \[([0-9]+\.[0-9]+\.[0-9]+)\] - [0-9]{4}-[0-9]{2}-[0-9]{2}$", changelog, re.M
    )
    assert versions and versions[0] == __version__, "CHANGELOG.md: the newest entry is the version"
    assert versions == sorted(versions, key=lambda v: tuple(map(int, v.split("."))), reverse=True)
    assert "## Upgrading" in (root / "docs" / "operating.md").read_text(encoding="utf-8")
