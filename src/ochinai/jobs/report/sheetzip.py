"""Sheet rows deflated on the second core while the first builds them, spliced into the
workbook's zip when xlsxwriter has written the rest.

xlsxwriter deflates every sheet when the workbook closes, on one core, after the rows
are built: for a million detail rows (about 240 MB of sheet XML) that is most of the
report's time. Here each detail sheet's rows go to a :class:`RowsDeflater` as they are
built, which compresses them in a thread with zlib-ng (which releases the GIL) into a temp file. At
close, xlsxwriter writes the workbook with the detail sheets holding their header row
only; :func:`splice` then copies that zip member by member, raw, and gives each detail
sheet its rows: the sheet's own XML up to ``</sheetData>``, the rows, and the rest, three
deflate segments joined into one stream (each of the first two ends on a sync flush, a
byte boundary, with no final block), with the CRC-32 of the whole combined from theirs.

The sheet XML is byte for byte what xlsxwriter writes; only the deflate bytes differ
from its own, and they depend on the rows and the zlib-ng build alone (not on how the
rows were sliced), so the same input gives the same file on the same image.
"""

from __future__ import annotations

import contextlib
import queue
import struct
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from zlib_ng import zlib_ng

from ochinai.runtime.errors import DataError

# zlib-ng at level 4 gives the workbook the size zlib's default level 6 gives (which
# xlsxwriter's zip uses) in half the time: 237 MB of detail XML, 1.7 s against 3.7 s.
LEVEL = 4
SLICE = 4 << 20  # bytes handed to the compressing thread at a time
QUEUED = 4  # slices waiting at most: the builder waits when the compressor lags
_ZIP32_MAX = 0xFFFF_FFFF  # a size or offset at or past it needs ZIP64
_END = b"</sheetData>"
THREAD_NAME = "rows-deflate"


class RowsDeflater:
    """Raw deflate of one sheet's rows, compressed in a thread as they are written.

    ``write`` hands a buffer over (it is kept, not copied, until compressed) and waits
    only while ``QUEUED`` slices are pending; ``finish`` returns the compressed rows.
    An error in the thread is raised by the next ``write`` or by ``finish``.
    """

    def __init__(self, tmpdir: Path) -> None:
        # Closed by finish's reader (splice) or abort: it outlives this call.
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=tmpdir)  # noqa: SIM115
        self._queue: queue.Queue[Any] = queue.Queue(QUEUED)
        self._error: BaseException | None = None
        self._crc = 0
        self._size = 0
        self._thread = threading.Thread(target=self._compress, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), SLICE):
            if isinstance(self._error, _Aborted):
                raise RuntimeError("the sheet's rows were given up (aborted)")
            self._raise_error()
            self._queue.put(view[start : start + SLICE])

    def finish(self) -> Deflated:
        self._queue.put(None)
        self._thread.join()
        self._raise_error()
        self._file.seek(0)
        return Deflated(self._file, self._crc, self._size)

    def abort(self) -> None:
        """Stop the thread and drop what it wrote (on an error in the job)."""
        if self._thread.is_alive():
            self._error = self._error or _Aborted()
            while True:  # make room for the sentinel: the thread may be waiting on a slice
                try:
                    self._queue.put_nowait(None)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
            self._thread.join()
        self._file.close()

    def _raise_error(self) -> None:
        if self._error is not None and not isinstance(self._error, _Aborted):
            raise self._error

    def _compress(self) -> None:
        deflate = zlib_ng.compressobj(LEVEL, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS)
        ended = False  # the end marker was taken: nothing more will be put
        try:
            while (piece := self._queue.get()) is not None:
                if self._error is not None:
                    continue  # aborted: drain until the sentinel
                self._crc = zlib_ng.crc32(piece, self._crc)
                self._size += len(piece)
                self._file.write(deflate.compress(piece))
            ended = True
            if self._error is None:
                self._file.write(deflate.flush(zlib_ng.Z_SYNC_FLUSH))
        except BaseException as exc:  # raised in the job's thread by write() or finish()
            self._error = exc
            # Let a write() waiting on a full queue go on to see it, until the end marker;
            # when the failure came after the end marker (the last flush), none will come.
            while not ended and self._queue.get() is not None:
                pass


class _Aborted(Exception):
    pass


@dataclass
class Deflated:
    """A sheet's rows as raw deflate ending on a sync flush, their CRC-32 and length."""

    file: IO[bytes]
    crc: int
    size: int


def splice(source: Path, target: Path, rows: dict[str, Deflated]) -> None:
    """``source`` (xlsxwriter's zip) copied to ``target`` member by member, in order, with
    the ``rows`` of each sheet named there inserted before its ``</sheetData>``."""
    with zipfile.ZipFile(source) as zin, target.open("wb") as out:
        central = []
        for info in zin.infolist():
            offset = out.tell()
            if offset >= _ZIP32_MAX:
                raise _too_large()
            extra = rows.get(info.filename)
            if extra is None or extra.size == 0:
                crc, csize, usize = info.CRC, info.compress_size, info.file_size
                out.write(_local_header(info, crc, csize, usize))
                _copy_raw(zin, info, out)
            else:
                crc, csize, usize = _write_spliced(zin, info, extra, out, offset)
            central.append(_central_entry(info, crc, csize, usize, offset))
        start = out.tell()
        for entry in central:
            out.write(entry)
        size = out.tell() - start
        if start >= _ZIP32_MAX or size >= _ZIP32_MAX:
            raise _too_large()
        count = len(central)
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, start, 0))


def _write_spliced(
    zin: zipfile.ZipFile, info: zipfile.ZipInfo, rows: Deflated, out: IO[bytes], offset: int
) -> tuple[int, int, int]:
    xml = zin.read(info)
    cut = xml.find(_END)
    if cut < 0:
        raise ValueError(f"{info.filename} has no {_END.decode()}")
    head, tail = xml[:cut], xml[cut:]
    deflate = zlib_ng.compressobj(LEVEL, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS)
    first = deflate.compress(head) + deflate.flush(zlib_ng.Z_SYNC_FLUSH)
    deflate = zlib_ng.compressobj(LEVEL, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS)
    last = deflate.compress(tail) + deflate.flush()
    rows.file.seek(0, 2)
    packed = rows.file.tell()
    rows.file.seek(0)
    usize = len(head) + rows.size + len(tail)
    csize = len(first) + packed + len(last)
    if usize >= _ZIP32_MAX or csize >= _ZIP32_MAX:  # 0xFFFFFFFF itself means ZIP64
        raise _too_large()
    crc = zlib_ng.crc32_combine(zlib_ng.crc32(head), rows.crc, rows.size)
    crc = zlib_ng.crc32_combine(crc, zlib_ng.crc32(tail), len(tail))
    out.write(_local_header(info, crc, csize, usize))
    out.write(first)
    while chunk := rows.file.read(SLICE):
        out.write(chunk)
    out.write(last)
    return crc, csize, usize


def _too_large() -> DataError:
    return DataError(
        "the workbook would be over 4 GiB, more than a zip without ZIP64 holds (and Excel "
        "opens); lower OCHINAI_REPORT_DETAIL_MAX_ROWS so that the rest of the detail is "
        "spilled to the .detail.csv.gz"
    )


def _copy_raw(zin: zipfile.ZipFile, info: zipfile.ZipInfo, out: IO[bytes]) -> None:
    """The member's compressed bytes as they are in ``zin``."""
    fp = zin.fp
    assert fp is not None
    fp.seek(info.header_offset)
    header = fp.read(30)
    name_len, extra_len = struct.unpack("<2H", header[26:30])
    fp.seek(info.header_offset + 30 + name_len + extra_len)
    left = info.compress_size
    while left:
        chunk = fp.read(min(left, SLICE))
        if not chunk:
            raise ValueError(f"{info.filename} is cut short")
        out.write(chunk)
        left -= len(chunk)


def _common(info: zipfile.ZipInfo, crc: int, csize: int, usize: int) -> tuple[bytes, list[int]]:
    """The name and the fields a local header and a central entry share, from the
    extract version to the name's length (sizes in them, never in a data descriptor)."""
    name = info.filename.encode("utf-8" if info.flag_bits & 0x800 else "ascii")
    y, mo, d, h, mi, s = info.date_time
    dostime, dosdate = (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d
    flags = info.flag_bits & ~0x08
    return name, [
        info.extract_version,
        info.reserved,
        flags,
        info.compress_type,
        dostime,
        dosdate,
        crc,
        csize,
        usize,
        len(name),
    ]


def _local_header(info: zipfile.ZipInfo, crc: int, csize: int, usize: int) -> bytes:
    name, fields = _common(info, crc, csize, usize)
    return struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", *fields, 0) + name


def _central_entry(info: zipfile.ZipInfo, crc: int, csize: int, usize: int, offset: int) -> bytes:
    name, fields = _common(info, crc, csize, usize)
    made_by = [info.create_version, info.create_system]
    after_name = [0, 0, 0, info.internal_attr, info.external_attr, offset]  # no extra, comment
    return struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", *made_by, *fields, *after_name) + name
