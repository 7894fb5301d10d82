"""Every Parquet file of the backup, written (``Writer``) and opened (``open_file``) here the
same way every time, and the fingerprint that says what a table holds whatever its batches."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ochinai.runtime.errors import ConfigError

if TYPE_CHECKING:
    from ochinai.jobs.backup.crypto import KeyRing

ROW_GROUP = 131_072  # rows a row group
READ_BATCH = 16_384  # rows a batch read back: 20 MB less than 65,536 at 5M rows, as fast
ZSTD_LEVEL = 1  # pyarrow's default: as fast as 3 on 5M sales rows, and 3% smaller


class Writer:
    """A Parquet file written in fixed row groups, whatever the batches given; encrypted
    when ``ring`` has a current key (OCHINAI_BACKUP_KEY).

    The same rows give the same bytes, for the same pyarrow: zstd at a fixed level, fixed
    row groups (rows are regrouped, so how a source was read in batches does not
    matter), no timestamps or paths in the file. An encrypted file has fresh data keys
    each time it is written, so its bytes differ from run to run; its values and
    fingerprint do not.
    """

    def __init__(self, path: Path, schema: pa.Schema, ring: KeyRing | None = None) -> None:
        self.path, self.schema = path, schema
        self._writer = pq.ParquetWriter(
            path,
            schema,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            version="2.6",
            write_statistics=True,
            store_schema=True,
            encryption_properties=(
                ring.encryption_properties() if ring is not None and ring.writes else None
            ),
        )
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0
        # Row groups are encoded and compressed in a thread of their own, one at a time
        # and in order, while the next rows are read (pyarrow lets go of the GIL).
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="parquet-writer")
        self._writing: Future[None] | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Add rows; a row group is written each time ROW_GROUP rows are waiting."""
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        while self._pending_rows >= ROW_GROUP:
            table = pa.Table.from_batches(self._pending, self.schema)
            group = table.slice(0, ROW_GROUP).combine_chunks()  # pages do not follow batches
            self._write(group)
            rest = table.slice(ROW_GROUP)
            self._pending = rest.to_batches()
            self._pending_rows = rest.num_rows

    def _write(self, group: pa.Table) -> None:
        """Start writing ``group`` once the group before it is written (its error raised)."""
        self._wait()
        self._writing = self._encoder.submit(
            self._writer.write_table, group, row_group_size=ROW_GROUP
        )

    def _wait(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def abort(self) -> None:
        """Give up: nothing more is encoded, the thread ends, the partial file is removed."""
        self._pending = []
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.cancel()
        self._encoder.shutdown(wait=True)
        with contextlib.suppress(Exception):  # the error being handled is the one to see
            self._writer.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        """Closed when the block ends, aborted when it raises."""
        if kind is None:
            self.close()
        else:
            self.abort()

    def close(self) -> None:
        """Write the last row group and the footer."""
        try:
            if self._pending_rows:
                self._write(pa.Table.from_batches(self._pending, self.schema).combine_chunks())
            self._pending = []
            self._wait()
        finally:
            self._encoder.shutdown(wait=True)
            self._writer.close()


class Fingerprint:
    """A sha256 of a table's columns, value by value, independent of its batches.

    Over each column's values in order (their validity, lengths and bytes): the source's
    is taken as it is read, and verify takes the Parquet's again, so that a file that
    reads back to other values, fewer rows or rows in another order does not pass.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.rows = 0
        self._hashes: dict[str, Any] = {}
        self._types: dict[str, str] = {}

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add the next rows (the columns in the order and with the names given)."""
        self.rows += batch.num_rows
        for name, column in zip(self.names, batch.columns, strict=True):
            for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
                self._array(name, chunk)

    def hexdigest(self) -> str:
        """The fingerprint: rows and every column's hashes."""
        total = hashlib.sha256(f"rows={self.rows}".encode())
        for key in sorted(self._types):
            total.update(f"\n{key}:type={self._types[key]}".encode())
        for key in sorted(self._hashes):
            total.update(f"\n{key}={self._hashes[key].hexdigest()}".encode())
        return total.hexdigest()

    def _feed(self, key: str, data: bytes | memoryview | np.ndarray[Any, Any]) -> None:
        if key not in self._hashes:
            self._hashes[key] = hashlib.sha256()
        self._hashes[key].update(data)

    def _array(self, key: str, array: pa.Array) -> None:
        # A byte a value, 1 when valid; views, not copies (fewer, smaller allocations).
        if array.null_count:
            self._feed(
                f"{key}:valid", array.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)
            )
        else:
            self._feed(f"{key}:valid", _ones(len(array)))
        kind = array.type
        self._types[key] = str(kind)
        if pa.types.is_struct(kind):
            for index in range(kind.num_fields):
                field = kind.field(index)
                self._array(f"{key}\x00{field.name}", array.field(index))
            return
        if pa.types.is_null(kind):
            return
        if pa.types.is_string(kind) or pa.types.is_binary(kind):
            self._bytes(key, array, np.int32)
        elif pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
            self._bytes(key, array, np.int64)
        else:  # fixed width: int64, float64 (bit for bit: -0.0 is not 0.0)
            values = array.fill_null(pa.scalar(0, kind)) if array.null_count else array
            self._feed(f"{key}:values", values.to_numpy(zero_copy_only=False).view(np.uint8))

    def _bytes(self, key: str, array: pa.Array, offset_type: Any) -> None:
        """Lengths and the bytes of the values, wherever the array's slice starts."""
        _, offsets_buffer, data_buffer = array.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type)
        offsets = offsets[array.offset : array.offset + len(array) + 1]
        lengths = np.subtract(offsets[1:], offsets[:-1], dtype=np.int64)
        self._feed(f"{key}:lengths", lengths.view(np.uint8))
        if data_buffer is not None and len(offsets) and offsets[-1] > offsets[0]:
            self._feed(f"{key}:data", memoryview(data_buffer)[offsets[0] : offsets[-1]])


_ONES = np.ones(0, dtype=np.uint8)


def _ones(n: int) -> np.ndarray[Any, Any]:
    """``n`` bytes of 1, from one buffer kept for every batch."""
    global _ONES
    if len(_ONES) < n:
        _ONES = np.ones(max(n, 1 << 16), dtype=np.uint8)
    return _ONES[:n]


def is_encrypted(path: Path) -> bool:
    """Whether the file's footer is encrypted (Parquet Modular Encryption): it ends with
    ``PARE`` where a plain file ends with ``PAR1``."""
    with open(path, "rb") as f:
        if f.seek(0, 2) < 4:
            return False
        f.seek(-4, 2)
        return f.read(4) == b"PARE"


def open_file(path: Path, ring: KeyRing | None = None) -> pq.ParquetFile:
    """A backup's Parquet file, decrypted with ``ring`` when it is encrypted.

    Without pre-buffering: at 5M sales rows it held 40 MB more, for no time saved
    (verify and restore read one file after another).
    """
    decryption = None
    if is_encrypted(path):
        if ring is None:
            raise ConfigError(  # its caller gave no keys: the setting unset, or not passed
                f"{path.name} is encrypted: reading it needs OCHINAI_BACKUP_KEY (or "
                "OCHINAI_BACKUP_OLD_KEYS) set to the key it was written with (the manifest "
                "gives the key's id)"
            )
        decryption = ring.decryption_properties()
    return pq.ParquetFile(path, pre_buffer=False, decryption_properties=decryption)


def read_schema(path: Path, ring: KeyRing | None = None) -> pa.Schema:
    """A backup's Parquet file's Arrow schema (``open_file``)."""
    schema: pa.Schema = open_file(path, ring).schema_arrow
    return schema


def read_batches(
    path: Path, batch_size: int = READ_BATCH, *, ring: KeyRing | None = None
) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows in batches, holding little more than two: the next batch is
    decoded in a thread while the caller takes this one (pyarrow lets go of the GIL),
    which halves verify's time; without pyarrow's own threads, as without pre-buffering
    (``open_file``)."""
    parquet = open_file(path, ring)
    batches = parquet.iter_batches(batch_size=batch_size, use_threads=False)
    with ThreadPoolExecutor(1, thread_name_prefix="parquet-reader") as reader:
        ahead = reader.submit(next, batches, None)
        try:
            while (batch := ahead.result()) is not None:
                ahead = reader.submit(next, batches, None)
                yield batch
        finally:  # the caller stopped early, or a batch failed: the thread reads no more
            ahead.cancel()
            with contextlib.suppress(Exception):
                ahead.result()


def sha256_file(path: Path) -> str:
    """The file's sha256, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
