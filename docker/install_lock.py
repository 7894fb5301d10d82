"""Install a pinned lock file into this interpreter in stages, one line each with its time.

`make` calls it for each lock file (runtime, local, test): the packages the earlier
lock files already installed are skipped, the largest go alone, the rest in small
groups, so that no step is long and silent. pip's own output goes to --log and its end
is shown when a step fails. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import IO

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


def install(lines: list[str], log: Path) -> bool:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # No dependencies of their own: the lock file holds them all, pinned. The bytecode is
    # written after, on every core (pip writes it on one).
    command += ["--no-deps", "--no-compile", "--require-hashes", "-r", handle.name]
    try:
        with log.open("a", encoding="utf-8") as out:
            return subprocess.run(command, stdout=out, stderr=out, check=False).returncode == 0
    finally:
        Path(handle.name).unlink()


def compile_installed(lines: list[str], out: IO[str]) -> bool:
    """Write the .pyc of the packages just installed, as pip would: a process started where
    PYTHONDONTWRITEBYTECODE is set (many CI and container images) would otherwise compile
    pyarrow, pandas and boto3 again each time (0.85 s a process)."""
    importlib.invalidate_caches()
    roots: set[Path] = set()
    for line in lines:
        match = REQUIREMENT.match(line)
        if not match:
            continue
        try:
            dist = metadata.distribution(match["name"])
        except metadata.PackageNotFoundError:  # its marker left it out (colorama: Windows)
            continue
        for file in dist.files or ():
            if file.suffix == ".py" and ".." not in file.parts:
                roots.add(Path(str(dist.locate_file(file.parts[0]))))
    if not roots:
        return True
    command = [sys.executable, "-m", "compileall", "-q", "-j", "0", *sorted(map(str, roots))]
    return subprocess.run(command, stdout=out, stderr=out, check=False).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path, help="the lock file to install")
    parser.add_argument(
        "--skip",
        type=Path,
        action="append",
        default=[],
        help="a lock file installed before: its packages are skipped",
    )
    parser.add_argument("--log", type=Path, required=True, help="where pip's output goes")
    args = parser.parse_args()
    done = {name for lock in args.skip for name in requirements(lock)}
    todo = {name: lines for name, lines in requirements(args.lock).items() if name not in done}
    for label, lines in stages(todo):
        start = time.monotonic()
        print(f"  {label} ...", end="", flush=True)
        if not install(lines, args.log):
            return failed(args.log)
        # Said as it goes, the bytecode after the install: no long silence on one line.
        print(f" {time.monotonic() - start:.0f} s, its bytecode ...", end="", flush=True)
        start = time.monotonic()
        with args.log.open("a", encoding="utf-8") as out:
            if not compile_installed(lines, out):
                return failed(args.log)
        print(f" {time.monotonic() - start:.0f} s", flush=True)
    return 0


def failed(log: Path) -> int:
    print(" failed:")
    print("\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]))
    print(f"(all of it in {log})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
