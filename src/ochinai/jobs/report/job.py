"""The report's run: read and validate the CSV, build the workbook, store it, announce it."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from zlib_ng import gzip_ng

from ochinai import __version__
from ochinai.jobs.report.sales import NeedsExactLines, SalesReader, aggregate, partial_aggregate
from ochinai.jobs.report.settings import COLUMNS, ReportSettings
from ochinai.jobs.report.workbook import SalesWorkbook, Totals, totals
from ochinai.runtime.calendar import dated
from ochinai.runtime.errors import ConfigError, DataError, RuleError, TransientError
from ochinai.runtime.job import Context, Summary
from ochinai.runtime.mask import Masker
from ochinai.runtime.notify import Attachment, Notice, notice_key
from ochinai.runtime.progress import CountingReader
from ochinai.runtime.storage import ObjectInfo, PreconditionFailed, PutResult, Store

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Summary counts that also go into the report's metadata, for reruns that build nothing.
COUNTED = (
    "rows",
    "bad_rows",
    "days",
    "stores",
    "groups",
    "detail_rows_in_workbook",
    "trimmed_codes",
    "truncated_cells",
    # Values read in a Japanese form (sales.py, japanese.py), and total rows set aside.
    "normalized_yen",
    "normalized_fullwidth",
    "normalized_minus",
    "normalized_dates",
    "skipped_total_rows",
)


@dataclass(frozen=True)
class Keys:
    """Where one business date's report lives."""

    workbook: str
    spill: str

    @classmethod
    def of(cls, prefix: str, day: date) -> Keys:
        stem = f"{prefix}report_{day:%Y%m%d}"
        return cls(f"{stem}.xlsx", f"{stem}.detail.csv.gz")


@dataclass
class Built:
    """A workbook built in a temp dir, and what went into it."""

    path: Path
    spill: Path | None
    totals: Totals
    bad_rows: int
    detail_rows_in_workbook: int
    trimmed_codes: int
    truncated_cells: int
    # Why the business date is closed when the CSV has no row for it: no report then.
    closed: str | None = None
    # Values read in a Japanese form, by kind, and the total rows set aside (COUNTED).
    read_as: dict[str, int] = field(default_factory=dict)


ReportContext = Context[ReportSettings]


def fingerprint(ctx: ReportContext, input_etag: str, input_size: int) -> str:
    """What the report's bytes depend on: input, date, settings that shape it, code version."""
    s = ctx.settings
    shaping = {
        "input": [s.input, input_etag, input_size],
        "date": ctx.business_date.isoformat(),
        "encoding": s.encoding,
        "columns": s.columns,
        "max_bad_rows": s.max_bad_rows,
        "strict": s.strict,
        "detail_max_rows": s.detail_max_rows,
        # The masked columns, and a token that changes with the key (never the key).
        "mask": [sorted(s.mask_columns), Masker(s.mask_key).token("ochinai")]
        if s.mask_columns
        else [],
        # The closed days decide which days the comparisons use.
        "calendar": [s.calendar, str(s.closed_days)],
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def _reader(ctx: ReportContext, stream: Any, exact: bool) -> SalesReader:
    s = ctx.settings
    return SalesReader(
        stream,
        ctx.store.url(s.input),
        headers=s.columns,
        encoding=s.encoding,
        max_bad_rows=s.max_bad_rows,
        exact=exact,
        reopen=lambda: ctx.store.open_read(s.input),
        strict=s.strict,
    )


def build(ctx: ReportContext, tmp: Path, keys: Keys, size: int | None = None) -> Built:
    """Read and validate the CSV (``size`` bytes), writing detail rows as they stream by."""
    try:
        return _build(ctx, tmp, keys, size, exact=False)
    except NeedsExactLines:
        ctx.log.info("a row has the wrong number of fields; reading again to number the lines")
        return _build(ctx, tmp, keys, size, exact=True)


def masking(ctx: ReportContext, reader: SalesReader) -> Callable[[pa.Table], pa.Table]:
    """What replaces the masked columns' values by tokens (nothing to do: the identity).

    Only columns beyond date, store, sku, sales and qty: the report sums by those.
    """
    s = ctx.settings
    if not s.mask_columns:
        return lambda table: table
    masker = Masker(s.mask_key)  # the key was checked when the settings loaded (78)
    summed = {reader.header[i] for i, c in enumerate(reader.columns) if c in COLUMNS}
    if s.mask_columns & summed:
        raise ConfigError(
            f"OCHINAI_REPORT_MASK_COLUMNS: {', '.join(sorted(s.mask_columns & summed))} "
            "cannot be masked: the report sums by date, store, sku, sales and qty"
        )
    missing = sorted(s.mask_columns - set(reader.header))
    if missing:
        raise DataError(
            f"{ctx.store.url(s.input)}: no column {', '.join(missing)} to mask "
            f"(OCHINAI_REPORT_MASK_COLUMNS; the header has {', '.join(reader.header)})"
        )
    names = [c for h, c in zip(reader.header, reader.columns, strict=True) if h in s.mask_columns]

    def mask(table: pa.Table) -> pa.Table:
        for name in names:
            at = table.schema.get_field_index(name)
            values = masker.array(table.column(name).combine_chunks())
            table = table.set_column(at, name, values)
        return table

    return mask


def _build(ctx: ReportContext, tmp: Path, keys: Keys, size: int | None, exact: bool) -> Built:
    """The workbook (and the spilled detail) of the input, or a closed day's figures."""
    path = tmp / Path(keys.workbook).name
    book, reader, daily = _read(ctx, path, size, exact)
    try:
        return _built(ctx, tmp, keys, exact, book, reader, daily)
    except BaseException:
        book.abort()
        raise


def _built(
    ctx: ReportContext,
    tmp: Path,
    keys: Keys,
    exact: bool,
    book: SalesWorkbook,
    reader: SalesReader,
    daily: pa.Table,
) -> Built:
    """What follows the read: a closed day's figures, or the spill and the workbook."""
    s = ctx.settings
    path = book.path
    calendar = s.business_calendar()
    has_day = pc.any(pc.equal(daily["date"], ctx.business_date)).as_py()
    closed = None if has_day else calendar.why_closed(ctx.business_date)
    if closed is not None:  # a quiet day: no report, and no rule broken
        book.discard()  # its temp files; the file itself is never stored
        figures = totals(daily, reader.rows, ctx.business_date, calendar)
        read = read_as(reader)
        return Built(
            path, None, figures, reader.bad_row_count, 0, reader.trimmed_codes, 0, closed, read
        )
    if s.require_date and not has_day:
        raise RuleError(
            f"{ctx.store.url(s.input)} has no row for the business date "
            f"{ctx.business_date} (OCHINAI_REPORT_REQUIRE_DATE is on)"
        )
    spill = None
    notes = _notes(ctx, reader, book)
    if s.detail_max_rows == 0:
        notes.append("明細は出力していません(OCHINAI_REPORT_DETAIL_MAX_ROWS=0)。")
    elif reader.rows > book.detail_rows:
        spill = write_spill(ctx, tmp / Path(keys.spill).name, exact)
        notes.append(
            f"明細 {reader.rows:,} 行のうち {book.detail_rows:,} 行だけをこのブックに収めました。"
            f"全明細: {ctx.store.url(keys.spill)}({reader.rows:,} 行)"
        )
    figures = totals(daily, reader.rows, ctx.business_date, calendar)
    book.finish(daily, notes, figures.day.lines())
    return Built(
        path,
        spill,
        figures,
        reader.bad_row_count,
        book.detail_rows,
        reader.trimmed_codes,
        book.cut.cells,
        read_as=read_as(reader),
    )


def _read(
    ctx: ReportContext, path: Path, size: int | None, exact: bool
) -> tuple[SalesWorkbook, SalesReader, pa.Table]:
    """One pass over the input: each batch into the workbook's detail and the partial
    sums; the workbook (its detail written), the reader and the daily sums."""
    s = ctx.settings
    parts: list[pa.Table] = []
    book: SalesWorkbook | None = None
    mask: Callable[[pa.Table], pa.Table] | None = None
    progress = ctx.progress(f"reading {ctx.store.url(s.input)}", total_bytes=size)
    try:
        with ctx.store.open_read(s.input) as raw:
            counted = CountingReader(raw)
            reader = _reader(ctx, io.BufferedReader(counted, 1 << 20), exact)
            for batch in reader.batches():
                ctx.check()  # pyarrow reads in its own threads: the job checks between batches
                progress.update(rows=reader.rows, bytes=counted.count)
                if book is None:
                    mask = masking(ctx, reader)
                    book = SalesWorkbook(
                        path, ctx.business_date, reader.header, reader.columns, s.detail_max_rows
                    )
                assert mask is not None
                book.add_detail(mask(batch))
                parts.append(partial_aggregate(batch))
                if len(parts) >= 64:  # keep the partial sums small whatever the input size
                    parts = [aggregate(parts)]
    except BaseException:
        if book is not None:
            book.abort()  # the detail's compressing thread and its temp file
        raise
    progress.done()
    assert book is not None  # batches() raises on an input without rows
    return book, reader, aggregate(parts)


def _notes(ctx: ReportContext, reader: SalesReader, book: SalesWorkbook) -> list[str]:
    """The workbook's notes on how the input was read (each also logged where it is a
    warning): the business date, rows left out, values changed, columns masked."""
    s = ctx.settings
    notes = [f"営業日 {ctx.business_date}、入力 {ctx.store.url(s.input)}"]
    if reader.bad_row_count:
        notes.append(
            f"不正な行 {reader.bad_row_count:,} 行を除外しました"
            f"(OCHINAI_REPORT_MAX_BAD_ROWS={s.max_bad_rows})。行番号はログにあります。"
        )
    if reader.trimmed_codes:
        ctx.log.warning(
            "%s: %d store or SKU values had white space at their edges, removed for the "
            "sums and the workbook (first at %s)",
            ctx.store.url(s.input),
            reader.trimmed_codes,
            reader.first_trimmed,
            extra={"trimmed_codes": reader.trimmed_codes, "first": reader.first_trimmed},
        )
        notes.append(
            f"店舗・SKU の前後の空白を {reader.trimmed_codes:,} 件取り除きました"
            f"(最初は {reader.first_trimmed})。"
        )
    notes += _japanese_notes(ctx, reader)
    if book.cut.cells:
        ctx.log.warning(
            "%d text cells are longer than Excel's 32,767 characters and were cut in the "
            "workbook (first at %s)",
            book.cut.cells,
            book.cut.first,
            extra={"truncated_cells": book.cut.cells, "first": book.cut.first},
        )
        notes.append(
            f"Excel の上限 32,767 文字を超える値 {book.cut.cells:,} 件を切り詰めました"
            f"(最初は {book.cut.first})。"
        )
    if s.mask_columns:
        notes.append(
            f"個人情報の列 {'、'.join(sorted(s.mask_columns))} は明細でトークンに置き換えています"
            "(OCHINAI_REPORT_MASK_COLUMNS)。"
        )
    return notes


# How the summary sheet names each kind of value read in a Japanese form (japanese.py).
READ_AS = {
    "yen": "¥・円の付いた金額",
    "fullwidth": "全角の数字・記号",
    "minus": "△・▲・− のマイナス",
    "dates": "年月日・和暦・8 桁の日付",
}


def read_as(reader: SalesReader) -> dict[str, int]:
    """The summary's counts of values read in a Japanese form, and of total rows."""
    counts = {f"normalized_{kind}": reader.normalized.get(kind, 0) for kind in READ_AS}
    return {**counts, "skipped_total_rows": reader.skipped_total_rows}


def _japanese_notes(ctx: ReportContext, reader: SalesReader) -> list[str]:
    """Lines for the summary sheet (and one for the log) about each thing read in a
    Japanese form, short enough to print: nothing changes silently."""
    where, notes = ctx.store.url(ctx.settings.input), []
    if reader.aliases:
        named = "、".join(f"{header}→{canon}" for canon, header in reader.aliases.items())
        notes.append(f"列名で読んだ列: {named}")
    if reader.normalized:
        first = reader.first_normalized
        ctx.log.info(
            "%s: values read in a Japanese form: %s",
            where,
            ", ".join(
                f"{kind} {n} (first at line {first[kind][0]}, column {first[kind][1]})"
                for kind, n in reader.normalized.items()
            ),
            extra={"normalized": reader.normalized},
        )
        notes += [
            f"読み替え: {READ_AS[kind]} {n:,} 件(最初は {first[kind][0]} 行目 {first[kind][1]})"
            for kind, n in reader.normalized.items()
        ]
    if reader.skipped_total_rows:
        notes.append(f"合計・小計の行 {reader.skipped_total_rows:,} 行は集計から外しました。")
    if reader.total_mismatch:
        line, wrong = reader.total_mismatch
        header = dict(zip(reader.columns, reader.header, strict=True))
        said = "、".join(f"{header[n]} {w:,}(上の行の計 {a:,})" for n, w, a in wrong)
        notes.append(f"注意: {line} 行目の合計行が合いません: {said}")
    return notes


def write_spill(ctx: ReportContext, path: Path, exact: bool) -> Path:
    """Every valid row as gzipped CSV (a second pass over the input; gzip mtime fixed to 0)."""
    with ctx.store.open_read(ctx.settings.input) as stream, open(path, "wb") as raw:
        reader = _reader(ctx, stream, exact)
        reader.max_bad_rows = 10**12  # the first pass already enforced the limit
        reader.log_skipped = False  # and logged the skipped rows
        # zlib-ng at level 5: at 5M rows 2.3 s where the standard gzip's 6 took 8.6 s, for
        # a file 3% larger (bench/README.md). Its GzipFile is the standard one's, untyped.
        spill = gzip_ng.GzipFile(  # type: ignore[no-untyped-call]
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=5
        )
        with spill as gz:
            writer: pacsv.CSVWriter | None = None
            mask: Callable[[pa.Table], pa.Table] | None = None
            for batch in reader.batches():
                ctx.check()
                mask = mask or masking(ctx, reader)
                batch = mask(batch)
                at = batch.schema.get_field_index("date")
                batch = batch.set_column(at, "date", pc.cast(batch["date"], pa.string()))
                table = batch.rename_columns(reader.header)
                if writer is None:
                    writer = pacsv.CSVWriter(gz, table.schema)
                writer.write_table(table)
            if writer is not None:
                writer.close()
    return path


def put_replacing(
    store: Store, key: str, body: Path, content_type: str, meta: dict[str, str]
) -> PutResult:
    """Create-only; if other bytes are there (a corrected input), replace them by CAS on their etag.

    A second writer between our read and our write makes the CAS fail with 412: this run
    then stops as transient instead of overwriting what the other one wrote.
    """
    try:
        return store.put(key, body, if_none_match=True, content_type=content_type, metadata=meta)
    except PreconditionFailed as exc:
        if not exc.current_etag:
            raise
        try:
            return store.put(
                key, body, if_match=exc.current_etag, content_type=content_type, metadata=meta
            )
        except PreconditionFailed as lost:
            raise TransientError(
                f"{store.url(key)} changed while this run replaced it (another writer); "
                "the next run decides again"
            ) from lost


def drop_stale_spill(store: Store, key: str, mark: str) -> None:
    """A corrected input that fits the workbook leaves no old .detail.csv.gz behind."""
    old = store.head(key)
    if old is not None and old.metadata.get("fingerprint") != mark:
        store.delete(key, if_match=old.etag)


def run(ctx: ReportContext) -> Summary:
    """Build, store and announce the business date's report; identical reruns write nothing."""
    s = ctx.settings
    keys = Keys.of(s.output_prefix, ctx.business_date)
    # Uploads that killed runs left open there: the report's lock covers its prefix.
    ctx.store.sweep_uploads(s.output_prefix, owned=lambda key: True)
    source = ctx.store.head(s.input)
    if source is None:
        raise DataError(f"{ctx.store.url(s.input)} does not exist; upload the sales CSV first")
    if source.size == 0:
        raise DataError(f"{ctx.store.url(s.input)} is empty")
    mark = fingerprint(ctx, source.etag, source.size)
    existing = ctx.store.head(keys.workbook)
    same = existing is not None and existing.metadata.get("fingerprint") == mark
    sent_id = notice_id(ctx, existing.metadata.get("sha256", "")) if existing else ""
    if existing and same and not ctx.notices.pending(sent_id, "report"):
        ctx.log.info("report unchanged, nothing to do", extra={"key": keys.workbook})
        notified = "already_sent" if ctx.notices.configured_for("report") else "not_configured"
        return Summary("unchanged", _counts_from(existing, notified))
    built = build(ctx, ctx.workdir, keys, source.size)  # removed by the runtime when the run ends
    counted = {
        "rows": built.totals.rows,
        "bad_rows": built.bad_rows,
        "days": built.totals.days,
        "stores": built.totals.stores,
        "groups": built.totals.groups,
        "detail_rows_in_workbook": built.detail_rows_in_workbook,
        "trimmed_codes": built.trimmed_codes,
        "truncated_cells": built.truncated_cells,
        **built.read_as,
    }
    if built.closed is not None:
        return closed_day(ctx, built.closed, counted)
    # Kept with the report so that an unchanged rerun's summary line has them too.
    meta = {"fingerprint": mark, "date": str(ctx.business_date)}
    meta |= {_meta_name(name): str(value) for name, value in counted.items()}
    if built.spill is not None:
        put_replacing(ctx.store, keys.spill, built.spill, "application/gzip", meta)
    result = put_replacing(ctx.store, keys.workbook, built.path, XLSX, meta)
    if built.spill is None:
        drop_stale_spill(ctx.store, keys.spill, mark)
    notified = announce(ctx, keys, built, result)
    counts = {
        **counted,
        "bytes": result.size,
        "report": result.outcome,
        "notified": notified,
    }
    unchanged = result.outcome == "unchanged" and notified in ("already_sent", "not_configured")
    ctx.log.info("report %s", result.outcome, extra={"key": keys.workbook, "sha256": result.sha256})
    return Summary("unchanged" if unchanged else "ok", counts)


def closed_day(ctx: ReportContext, why: str, counted: dict[str, int]) -> Summary:
    """A closed business date without a row in the CSV: no workbook, nothing sent but a
    short note when OCHINAI_REPORT_CLOSED_DAY_NOTE asks for one (once a date); a success."""
    day = ctx.business_date
    ctx.log.info("%s is a closed day (%s) without sales: no report", day, why)
    notified = "not_asked"
    if ctx.settings.closed_day_note:
        note = Notice(
            key=notice_key("report", day, "closed_day"),
            subject=f"売上日報 {day}(休業日)",
            text=f"{dated(day)} は休業日({why})で売上がないため、日報はお休みします。",
            kind="report",
        )
        notified = ctx.notices.send(note)
    return Summary("closed_day", {**counted, "report": "none", "closed": why, "notified": notified})


def _meta_name(count: str) -> str:
    # Metadata travels as x-amz-meta-* headers; proxies (nginx by default) drop headers
    # whose names hold underscores.
    return count.replace("_", "-")


def _counts_from(existing: ObjectInfo, notified: str) -> dict[str, Any]:
    """The summary counts of a report already stored, read back from its metadata."""
    meta = existing.metadata
    counts: dict[str, Any] = {name: int(meta.get(_meta_name(name), 0)) for name in COUNTED}
    return {**counts, "bytes": existing.size, "report": "unchanged", "notified": notified}


def notice_id(ctx: ReportContext, sha256: str) -> str:
    """The report notice's id: one per business date and workbook content.

    ``report/<date>/<sha256 prefix>``, so its deliveries are recorded where earlier
    versions recorded them (``_sent/report/<date>/<sha256 prefix>/<channel>.json``).
    """
    return notice_key("report", ctx.business_date, sha256[:16])


def announce(ctx: ReportContext, keys: Keys, built: Built, result: PutResult) -> str:
    """Mail and/or webhook, each at most once per report content; a failure is an error."""
    if not ctx.notices.configured_for("report"):
        return "not_configured"
    if ctx.dry_run:
        return "dry_run"
    if not ctx.notices.pending(notice_id(ctx, result.sha256), "report"):
        return "already_sent"  # before presigning and reading the workbook for nothing
    s, t = ctx.settings, built.totals
    link = ctx.store.presign(keys.workbook, s.link_expiry)
    attach = result.size <= s.mail_max_bytes
    name = Path(keys.workbook).name
    expires = (ctx.now() + timedelta(seconds=s.link_expiry)).astimezone(ctx.runtime.timezone)
    lines = [
        *about(ctx),
        "",
        *t.day.lines(),
        "",
        f"添付: {name} ({_size(result.size)})"
        if attach
        else f"ファイルが大きいため添付せず、リンクでお送りします: {name} ({_size(result.size)})",
        f"リンクの有効期限: {expires:%Y-%m-%d %H:%M} ({ctx.runtime.timezone.key})",
    ]
    text = "\n".join(lines)
    notice = Notice(
        key=notice_id(ctx, result.sha256),
        subject=f"売上日報 {ctx.business_date}",
        text=text,
        attachments=(Attachment(name, built.path.read_bytes(), XLSX),) if attach else (),
        link=link,
        kind="report",
    )
    return ctx.notices.send(notice)


def about(ctx: ReportContext) -> list[str]:
    """The mail's first lines: the business date, which day it is to the day the mail goes
    out (in OCHINAI_TIMEZONE), and that it is a closed day when it is one."""
    day = ctx.business_date
    today = ctx.now().astimezone(ctx.runtime.timezone).date()
    calendar = ctx.settings.business_calendar()
    if day == calendar.previous_business_day(today):
        which = "前営業日"
    elif day == today:
        which = "本日"
    elif day == today - timedelta(days=1):
        which = "前日"
    elif day < today:
        which = f"{(today - day).days} 日前"
    else:
        which = f"{(day - today).days} 日後"
    lines = [f"営業日 {dated(day)}({which})の売上日報です。"]
    closed = calendar.why_closed(day)
    if closed is not None:
        lines.append(f"この日は休業日({closed})ですが、売上があるためお送りします。")
    return lines


def _size(n: int) -> str:
    """A file size as people read it: 812 B, 41 KB, 3.2 MB."""
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.0f} KB"
    return f"{n / 1_000_000:.1f} MB"
