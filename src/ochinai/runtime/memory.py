"""Memory given back as it is freed, for the actions that move data in blocks of megabytes."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

MMAP_THRESHOLD = 256 << 10  # bytes: a block this large or larger is a mapping of its own
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # free memory at the heap's top beyond this goes back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@contextlib.contextmanager
def lean_memory() -> Iterator[None]:
    """Arrow's memory from the C library's allocator for the duration, then as it was, and
    glibc's large blocks given back to the system as they are freed.

    The report and the backup allocate and free blocks of megabytes in turn (Arrow's
    buffers, the bytes read from S3, the sheet XML). Arrow's default allocator (mimalloc)
    keeps what a thread freed for that thread, and glibc raises its mmap threshold to the
    largest block freed (up to 32 MB), so that blocks under it come from a heap that
    seldom shrinks: the peak RSS was what the allocators kept, not what was in use. With
    both set, the 1M-row report peaked at about 230 MB instead of 310, the 5M-row backup
    at 195 MB instead of 232, as fast (bench/README.md). The monitor (many small Python
    objects, no Arrow) runs without.

    The command's entry point makes the C library's allocator Arrow's default before
    pyarrow starts (ARROW_DEFAULT_MEMORY_POOL), since a started mimalloc holds memory of
    its own; here it is also set for a caller that did not start there (the tests).
    Buffers keep the pool they came from, so switching is safe. glibc's thresholds cannot
    be read, so they stay for the rest of the process; MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_ set in the environment is left as it is, and without glibc
    (musl, macOS) nothing is set.
    """
    import pyarrow as pa

    _large_blocks_returned()
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _large_blocks_returned() -> None:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        # As glibc would have it for this threshold: by now the imports may have raised
        # it with the mmap threshold, to twice the largest block freed.
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
