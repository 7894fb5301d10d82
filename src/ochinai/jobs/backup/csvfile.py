"""A CSV source to Parquet and back, every value as it was written: the backup's column
types, masking and restore, on the batches of runtime/csvreader.py."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ochinai.jobs.backup.parquet import Fingerprint, Writer, read_batches
from ochinai.runtime.csvreader import CsvReader, ReadAgain
from ochinai.runtime.encoding import newline_byte
from ochinai.runtime.errors import DataError

if TYPE_CHECKING:
    from ochinai.jobs.backup.crypto import KeyRing

# Every value is read as text. A column becomes int64 or float64 only when every value of
# it comes back as the same text (``000123``, ``1,234``, ``1e5``, ``1.50``, ``  7`` stay
# text); an unquoted empty field is a missing value (null) and a quoted one (``""``) an
# empty string, and the two stay apart. UTF-8, UTF-8 with BOM and CP932 are read; the
# restored file is UTF-8, and the manifest says what the source was.

HINT = "set OCHINAI_BACKUP_ENCODING if the file is in another encoding"
BLOCK_SIZE = 1 << 18  # 256 KiB blocks: 1 MiB ones held 45 MB more at 5M rows, no faster
USE_THREADS = True
# The largest block, so the largest record (a value of megabytes): pyarrow holds several
# blocks at once, and a backup of a 60 MB value peaked at 530 MB where a pod has 1 GiB.
_MAX_BLOCK = 1 << 26
_TYPES = {"int64": pa.int64(), "float64": pa.float64()}


@dataclass
class CsvResult:
    """What one CSV became: its header and columns as the manifest keeps them."""

    encoding: str
    header: list[str]  # as in the file
    columns: list[dict[str, str]]  # per column: name in the Parquet, type
    rows: int
    fingerprint: str
    masked: list[str] = field(default_factory=list)
    newline: str = "\n"  # what ends a line: "\r\n", "\n" or "\r" (restore writes it back)


def column_names(header: list[str]) -> list[str]:
    """Parquet column names: the header's, made unique and non-empty (``a``, ``a_2``)."""
    names: list[str] = []
    for index, name in enumerate(header):
        base = name or f"column_{index + 1}"
        candidate, n = base, 1
        while candidate in names:
            n += 1
            candidate = f"{base}_{n}"
        names.append(candidate)
    return names


# The text an int64 is written back as, up to 18 digits (so that it always fits): no
# sign but '-', no leading zero, no space. A 19-digit value stays text.
_INTEGER_TEXT = r"^(0|-?[1-9][0-9]{0,17})$"


def _is_integer_text(column: pa.Array) -> bool:
    """Every value is the text of an int64 (what casting it and back would check).

    First without the regex, three times faster: when every value is 1 to 18 ASCII
    digits and none but "0" starts with 0 (no negative number, the usual column).
    """
    digits = pc.ascii_is_decimal(column)  # False for "" and for "-1"
    if pc.all(digits).as_py() in (True, None):
        lengths = pc.binary_length(column)
        if (pc.max(lengths).as_py() or 0) <= 18:
            zero_led = pc.and_(pc.starts_with(column, "0"), pc.greater(lengths, 1))
            return not pc.any(zero_led).as_py()
    matches = pc.match_substring_regex(column, _INTEGER_TEXT)
    return bool(pc.all(matches).as_py() in (True, None))


def _survives(column: pa.Array, kind: pa.DataType) -> bool:
    """Every value of ``column`` comes back as the same text from ``kind``."""
    try:
        typed = pc.cast(column, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    back = pc.cast(typed, pa.string())
    same = pc.equal(back, column)
    return bool(pc.all(same).as_py() in (True, None))


def to_parquet(
    path: Path,
    where: str,
    out: Path,
    scratch: Path,
    encoding: str = "auto",
    mask: Callable[[pa.Array], pa.Array] | None = None,
    masked: frozenset[str] = frozenset(),
    check: Callable[[], None] = lambda: None,
    advance: Callable[[int], None] = lambda rows: None,
    ring: KeyRing | None = None,
    opener: Callable[[], IO[bytes]] | None = None,
) -> CsvResult:
    """Write ``path`` (named ``where`` in messages) as Parquet to ``out``, encrypted
    with ``ring`` when it has a current key. ``opener``: how to open ``path`` (a file
    still downloading is read at the download's pace)."""
    opener = opener or (lambda: open(path, "rb"))  # noqa: SIM115 (opened in a with)
    with opener() as raw:
        reader = CsvReader(
            raw,
            where,
            encoding=encoding,
            hint=HINT,
            reopen=opener,
            nulls=True,
            threads=USE_THREADS,
            block_size=BLOCK_SIZE,
            max_block=_MAX_BLOCK,
        )
        header = reader.header
        if not header:
            raise DataError(f"{where} line 1: no header")
        names = column_names(header)
        unknown = sorted(masked - set(header))
        if unknown:
            raise DataError(f"{where}: no column {', '.join(unknown)} to mask (found: {header})")
        masked_names = [n for n, h in zip(names, header, strict=True) if h in masked]
        newline = line_ending(reader.head)
        if _header_only(reader):
            # Or the header holds a quote that makes the rest of the file part of it.
            left_open = reader.quote_left_open()
            if left_open is not None:
                raise left_open
            empty = _empty(out, reader.encoding, header, names, masked_names, ring)
            return replace(empty, newline=newline)
        read = _Read(reader, names, masked_names, mask, check, advance, ring)
        result = _converted(read, out, scratch)
        return CsvResult(reader.encoding, header, *result, masked=masked_names, newline=newline)


@dataclass
class _Read:
    """How to read the source's batches, as many times as needed."""

    reader: CsvReader
    names: list[str]
    masked: list[str]
    mask: Callable[[pa.Array], pa.Array] | None
    check: Callable[[], None]
    advance: Callable[[int], None]  # told the rows read so far in this pass
    ring: KeyRing | None = None  # the Parquet written from them is encrypted with its key

    def batches(self) -> Generator[pa.RecordBatch, None, None]:
        """The rows as text, masked columns masked; DataError naming the place if unreadable."""
        rows = 0
        with closing(self.reader.batches(self.names)) as batches:
            for batch in batches:
                self.check()
                if batch.records.num_rows:
                    rows += batch.records.num_rows
                    yield self._passed(batch.records, rows)

    def _passed(self, batch: pa.RecordBatch, rows: int) -> pa.RecordBatch:
        self.advance(rows)
        if self.masked and self.mask is not None:
            return _masked(batch, self.masked, self.mask)
        return batch

    def candidates(self) -> dict[str, dict[str, bool]]:
        """Per column that may be typed: the types still possible (all, before any row)."""
        return {name: dict.fromkeys(_TYPES, True) for name in self.names if name not in self.masked}


_Columns = tuple[list[dict[str, str]], int, str]  # columns, rows, fingerprint


def _converted(read: _Read, out: Path, scratch: Path) -> _Columns:
    """One pass when the first batch's types hold to the end (the column types are guessed
    from it and every later batch is checked against them); otherwise the file is read
    again, its text spilled to ``scratch`` while the types are learnt, and written from
    there. Both give the same file (the same bytes, unencrypted)."""
    while True:
        try:
            result = _one_pass(read, out)
            return _two_passes(read, out, scratch) if result is None else result
        except ReadAgain:
            # A value of megabytes (a document, an image as base64) needs blocks that hold
            # the largest record whole; small blocks keep memory flat for the others.
            continue


def _columns(read: _Read, typed: dict[str, dict[str, bool]]) -> list[dict[str, str]]:
    chosen = {name: _choose(candidates) for name, candidates in typed.items()}
    return [{"name": n, "type": chosen.get(n, "string")} for n in read.names]


def _target(columns: list[dict[str, str]]) -> pa.Schema:
    return pa.schema([(c["name"], _TYPES.get(c["type"], pa.string())) for c in columns])


def _cast(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    arrays = [pc.cast(batch.column(i), f.type) for i, f in enumerate(target)]
    return pa.RecordBatch.from_arrays(arrays, schema=target)


def _one_pass(read: _Read, out: Path) -> _Columns | None:
    """Typed by the first batch and written as read; None when a later batch disagrees."""
    typed = read.candidates()
    print_ = Fingerprint(read.names)
    writer: Writer | None = None
    columns: list[dict[str, str]] = []
    batches = read.batches()
    finished = False
    try:
        for batch in batches:
            for name, candidates in typed.items():
                _narrow(candidates, batch.column(name), writer is None)
            if writer is None:
                columns = _columns(read, typed)
                writer = Writer(out, _target(columns), read.ring)
            elif _columns(read, typed) != columns:
                return None  # a type guessed from the first rows does not hold
            print_.update(batch)
            writer.write(_cast(batch, writer.schema))
        finished = True
    finally:
        batches.close()  # the source file, when the pass stops early
        if writer is not None:  # a file cut short is not left looking whole
            writer.close() if finished else writer.abort()
    if writer is None:  # no row after the header
        columns = _columns(read, typed)
        Writer(out, _target(columns), read.ring).close()
    return columns, print_.rows, print_.hexdigest()


def _two_passes(read: _Read, out: Path, scratch: Path) -> _Columns:
    """The types learnt from every row (the text spilled meanwhile), then written."""
    typed = read.candidates()
    print_ = Fingerprint(read.names)
    schema = pa.schema([(name, pa.string()) for name in read.names])
    first = True
    try:
        with ipc.new_file(scratch, schema) as spill:
            for batch in read.batches():
                for name, candidates in typed.items():
                    _narrow(candidates, batch.column(name), first)
                first = False
                print_.update(batch)
                spill.write_batch(batch)
        columns = _columns(read, typed)
        # Read, not mapped: mapped pages would count in the pod's memory, the whole file.
        with (
            Writer(out, _target(columns), read.ring) as writer,
            pa.OSFile(str(scratch)) as raw,
            ipc.open_file(raw) as spilled,
        ):
            for index in range(spilled.num_record_batches):
                writer.write(_cast(spilled.get_batch(index), writer.schema))
    finally:
        scratch.unlink(missing_ok=True)  # also when the source fails half way
    return columns, print_.rows, print_.hexdigest()


def _narrow(candidates: dict[str, bool], column: pa.Array, first: bool) -> None:
    """Drop the types this batch's values do not survive.

    While int64 survives, float64 is not checked (int64 would be chosen); so when int64
    fails after the first batch, float64 is dropped too: earlier batches went unchecked.
    Text is always right.
    """
    if candidates["int64"]:
        if _is_integer_text(column):
            return
        candidates["int64"] = False
        if not first:
            candidates["float64"] = False
    if candidates["float64"]:
        candidates["float64"] = _survives(column, pa.float64())


def _header_only(reader: CsvReader) -> bool:
    """The whole file is its header (its columns are text, not typed by no rows)."""
    return reader.complete and sum(1 for record in reader.head_records() if record) <= 1


def _empty(
    out: Path,
    encoding: str,
    header: list[str],
    names: list[str],
    masked: list[str],
    ring: KeyRing | None,
) -> CsvResult:
    schema = pa.schema([(name, pa.string()) for name in names])
    Writer(out, schema, ring).close()
    columns = [{"name": n, "type": "string"} for n in names]
    return CsvResult(encoding, header, columns, 0, Fingerprint(names).hexdigest(), masked)


def _choose(candidates: dict[str, bool]) -> str:
    if candidates["int64"]:
        return "int64"
    return "float64" if candidates["float64"] else "string"


def _masked(
    batch: pa.RecordBatch, names: list[str], mask: Callable[[pa.Array], pa.Array]
) -> pa.RecordBatch:
    arrays = [
        mask(batch.column(i)) if f.name in names else batch.column(i)
        for i, f in enumerate(batch.schema)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def text_columns(table: pa.Table | pa.RecordBatch) -> list[pa.Array]:
    """The columns as the CSV had them: text, typed ones formatted back."""
    return [
        column if column.type == pa.string() else pc.cast(column, pa.string())
        for column in table.columns
    ]


def fingerprint_of(path: Path, names: list[str], ring: KeyRing | None = None) -> tuple[int, str]:
    """Rows and fingerprint of a backed-up CSV's Parquet, read back as text (decrypted
    with ``ring`` when it is encrypted)."""
    print_ = Fingerprint(names)
    for batch in read_batches(path, ring=ring):
        print_.update(pa.table(text_columns(batch), names=names))
    return print_.rows, print_.hexdigest()


def line_ending(head: bytes) -> str:
    """What ends the file's lines, judged by its head: CRLF, LF or (old Mac) CR."""
    if b"\r\n" in head:
        return "\r\n"
    return "\r" if newline_byte(head) == 13 else "\n"


def restore(
    parquet: Path,
    header: list[str],
    out: Path,
    encoding: str = "utf-8",
    newline: str = "\n",
    ring: KeyRing | None = None,
) -> int:
    """Write the CSV back, the header as it was, in ``encoding`` (``utf-8-sig``: with its
    BOM) with ``newline`` ending each record; the rows written. ``ring`` decrypts the
    Parquet when it is encrypted.

    Values are written as pyarrow formats them (the text the typing compared), quoted only
    where they must be (a comma, a quote or a line break in them) and an empty string as
    ``""`` (a missing value is nothing): the source byte for byte, unless it quoted values
    that need no quotes. A line break inside a quoted value is kept as it was.
    """
    rows = 0
    text = "utf-8" if encoding.startswith("utf") else encoding
    with open(out, "wb") as f:
        if encoding == "utf-8-sig":
            f.write(codecs.BOM_UTF8)
        f.write((",".join(_quoted_text(h) for h in header) + newline).encode(text))
        for batch in read_batches(parquet, ring=ring):
            if batch.num_rows:
                lines = _records(batch).to_pylist()
                f.write((newline.join(lines) + newline).encode(text))
            rows += batch.num_rows
    return rows


def _quoted_text(value: str) -> str:
    if value == "" or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _records(batch: pa.RecordBatch) -> pa.Array:
    """Each row as its CSV line (without the line end), by pyarrow's kernels."""
    fields = []
    for column in batch.columns:
        as_text = pc.cast(column, pa.string())
        needs = pc.or_(pc.match_substring_regex(as_text, '[,"\r\n]'), pc.equal(as_text, ""))
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(as_text, '"', '""'), '"', "")
        fields.append(pc.if_else(needs, quoted, as_text))
    if len(fields) == 1:
        return pc.fill_null(fields[0], "")
    return pc.binary_join_element_wise(*fields, ",", null_handling="replace", null_replacement="")
