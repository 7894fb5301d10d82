"""Install a pinned lock file into this interpreter in stages, one line each with its time.

`make` calls it for each lock file (runtime, local, test): the packages the earlier
lock files already installed are skipped, the largest go alone, the rest in small
groups, so that no step is long and silent. pip's own output goes to --log and its end
is shown when a step fails. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Large wheels, each a step of its own (the names as the lock files spell them).
ALONE = ("pyarrow", "pandas", "numpy", "kubernetes", "botocore", "moto", "cfn-lint", "mypy")
GROUP = 12
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


def requirements(lock: Path) -> dict[str, list[str]]:
    """Each pinned package's lines (its hashes and markers) by name, in file order."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = REQUIREMENT.match(line)
        if match:
            # A name may be pinned twice, for different Python versions (markers).
            current = found.setdefault(match["name"].lower(), [])
            current.append(line)
        elif line.startswith((" ", "\t")) and current is not None:
            current.append(line)
        else:
            current = None
    return found


def stages(todo: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """(what it installs, its lines): the large packages one by one, then groups."""
    out = [(name, todo[name]) for name in ALONE if name in todo]
    rest = [name for name in todo if name not in ALONE]
    for start in range(0, len(rest), GROUP):
        names = rest[start : start + GROUP]
        label = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        out.append((label, [line for name in names for line in todo[name]]))
    return out


def install(lines: list[str], log: Path, compile_all: bool) -> bool:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # No dependencies of their own (the lock file holds them all, pinned), and no .pyc
    # for the modules never imported (--compile-imports writes those ochinai imports).
    command += ["--no-deps", "--require-hashes", "-r", handle.name]
    if not compile_all:
        command.append("--no-compile")
    try:
        with log.open("a", encoding="utf-8") as out:
            return subprocess.run(command, stdout=out, stderr=out, check=False).returncode == 0
    finally:
        Path(handle.name).unlink()


def compile_imports(package: str) -> int:
    """Import every module of ``package`` with bytecode writing on, so that the modules it
    imports (and only those) get their .pyc: a later run, even with
    PYTHONDONTWRITEBYTECODE set (as in many CI images), starts without compiling them."""
    command = [
        sys.executable,
        "-c",
        "import importlib, pkgutil, sys; sys.dont_write_bytecode = False; "
        f"import {package} as p; "
        "[importlib.import_module(m.name) "
        "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.run(command, env=env, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path, nargs="?", help="the lock file to install")
    parser.add_argument(
        "--compile-imports",
        metavar="PACKAGE",
        help="instead: write the .pyc of what PACKAGE's modules import",
    )
    parser.add_argument(
        "--skip",
        type=Path,
        action="append",
        default=[],
        help="a lock file installed before: its packages are skipped",
    )
    parser.add_argument("--log", type=Path, help="where pip's output goes")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="write every module's .pyc now (the test tools: size is no matter)",
    )
    args = parser.parse_args()
    if args.compile_imports:
        return compile_imports(args.compile_imports)
    if args.lock is None or args.log is None:
        parser.error("a lock file and --log are needed")
    done = {name for lock in args.skip for name in requirements(lock)}
    todo = {name: lines for name, lines in requirements(args.lock).items() if name not in done}
    for label, lines in stages(todo):
        start = time.monotonic()
        print(f"  {label} ...", end="", flush=True)
        if not install(lines, args.log, args.compile):
            print(" failed:")
            tail = args.log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
            print("\n".join(tail))
            print(f"(all of it in {args.log})")
            return 1
        print(f" {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
