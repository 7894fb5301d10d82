"""A run's build directory under TMPDIR, and the sweep of those that killed runs left behind.

A run killed by SIGKILL never removes its directory (a report's is up to 80 MB). Each
directory holds ``.owner``, locked with flock(2) for as long as its run lives; the
kernel drops the lock when the process dies, however it dies. So a run that can take
the lock of another's ``.owner`` knows that run is gone and removes its directory.
Directories without an owner file (from versions that made none) go once they are
older than an hour.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("ochinai.run")

OWNER = ".owner"
UNOWNED_MAX_AGE = 3600.0


@contextlib.contextmanager
def build_dir(job: str, run_id: str, base: Path | None = None) -> Iterator[Path]:
    """A fresh directory for this run, removed when the block ends; stale ones swept first."""
    base = Path(base or tempfile.gettempdir())
    sweep(base, job)
    path = Path(tempfile.mkdtemp(prefix=f"ochinai-{job}-{run_id}-", dir=base))
    # Locked before it is named .owner: a sweep never sees an owner file nobody holds.
    fd = os.open(path / f"{OWNER}.new", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(path / f"{OWNER}.new", path / OWNER)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def sweep(base: Path, job: str) -> int:
    """Remove the build directories of ``job`` whose run is dead; how many were removed."""
    removed, freed = 0, 0
    for path in base.glob(f"ochinai-{job}-*"):
        try:
            if path.is_symlink() or not path.is_dir() or not _dead(path):
                continue
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        except FileNotFoundError:
            continue  # another run swept it first
        shutil.rmtree(path, ignore_errors=True)
        removed, freed = removed + 1, freed + size
    if removed:
        log.info(
            "removed %d build directories that killed runs left in %s",
            removed,
            base,
            extra={"removed_dirs": removed, "freed_bytes": freed},
        )
    return removed


def _dead(path: Path) -> bool:
    """No live process holds the directory's owner lock (or it has none and is old)."""
    try:
        fd = os.open(path / OWNER, os.O_RDWR)
    except FileNotFoundError:
        return time.time() - path.stat().st_mtime > UNOWNED_MAX_AGE
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its run is alive
    finally:
        os.close(fd)
    return True
