"""Measure the report job against the seed template: wall time, peak RSS and identical totals.

At the sizes a sheet can hold (1,048,576 rows), the job also runs beside the engines a
user would pick instead (``pip install -e .[bench]``; a peer not installed is skipped):
DuckDB with its excel extension and polars with rustpy-xlsxwriter, reading the local CSV
and writing local files, in interleaved rounds with the job (medians).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))  # for tests.servers
sys.path.insert(0, str(ROOT / "bench"))  # for peers
import peers  # noqa: E402  (the standard library only)

DATA = {"rng_seed": 20261128, "first_day": "2026-09-01", "days": 90, "stores": 200, "skus": 5000}
DATA_VERSION = 1  # bump when the generator changes, so that cached CSVs are made again
COLUMNS = ("date", "store", "sku", "sales", "qty")
BUSINESS_DATE = "2026-11-28"
REPORT_KEY, SPILL_KEY = "out/report_20261128.xlsx", "out/report_20261128.detail.csv.gz"
JOB_FIELDS = ("outcome", "exit_code", "rows", "groups", "detail_rows_in_workbook", "bytes")
SEED, SEED_AGG, ARROW = "seed template", "seed read+groupby only", "pyarrow parse only"
ARROW_S3 = "pyarrow parse from S3"
FLOOR = "least report from S3"
REPEATS = 3  # the 5M detail-off comparison: each variant this often, interleaved; medians
JOB, JOB_NO_DETAIL = "report job", "report job, detail off"
UNITS = {"": 1, "k": 1000, "m": 1_000_000}
SHEET_ROWS = 1_048_576  # an Excel sheet's rows, the header's included
PEER_VARIANTS = {
    peers.DUCKDB: "DuckDB + excel extension (2 files)",
    peers.POLARS: "polars + rustpy-xlsxwriter",
}
PEER_MODES = {peers.DUCKDB: "duckdb", peers.POLARS: "polars"}
PEER_COLUMNS = ("date", "store", "sales", "qty", "count")
JOB_COLUMNS = ("日付", "店舗", "売上", "数量", "件数")


# --- Work done in child processes: `report_bench.py --child MODE ARGS...` ------------------


def generate(rows: int, path: Path) -> None:
    """Write a deterministic sales CSV of ``rows`` rows, dates ascending, from arrays."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng([DATA["rng_seed"], rows])
    day = np.sort(rng.integers(0, DATA["days"], rows, dtype=np.int32))
    stores = pa.array([f"S{i:03d}" for i in range(1, DATA["stores"] + 1)])
    skus = pa.array([f"{i:06d}" for i in range(1, DATA["skus"] + 1)])
    table = pa.table(
        {
            "date": pa.array(np.datetime64(DATA["first_day"]) + day),
            "store": stores.take(pa.array(rng.integers(0, len(stores), rows))),
            "sku": skus.take(pa.array(rng.integers(0, len(skus), rows))),
            "sales": pa.array(rng.integers(100, 50_001, rows)),
            "qty": pa.array(rng.integers(1, 21, rows)),
        }
    )
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write((",".join(COLUMNS) + "\n").encode())  # pyarrow would quote the header
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    tmp.replace(path)


def seed_template(path: str, out: str) -> None:
    """The seed template's logic, verbatim: it fails above 1,048,576 rows."""
    import pandas as pd

    df = pd.read_csv(path, parse_dates=["date"], dtype={"store": "string", "sku": "string"})
    summary = (
        df.groupby(["date", "store"]).agg(sales=("sales", "sum"), qty=("qty", "sum")).reset_index()
    )
    with pd.ExcelWriter(out, engine="xlsxwriter") as w:
        summary.to_excel(w, sheet_name="summary", index=False)
        df.to_excel(w, sheet_name="detail", index=False)


def seed_summary(path: str) -> Any:
    """The seed template's read and groupby alone, plus the row count of each group."""
    import pandas as pd

    df = pd.read_csv(path, parse_dates=["date"], dtype={"store": "string", "sku": "string"})
    grouped = df.groupby(["date", "store"])
    summary = grouped.agg(sales=("sales", "sum"), qty=("qty", "sum")).reset_index()
    summary["count"] = grouped.size().to_numpy()
    return summary


def arrow_parse(path: str) -> int:
    """Stream the file through pyarrow's CSV reader, every column a string; count the rows."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, encoding="utf-8") as f:
        types = {name: pa.string() for name in f.readline().strip().split(",")}
    reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    return sum(batch.num_rows for batch in reader)


def arrow_parse_s3(bucket: str) -> int:
    """The same, reading in/sales.csv from S3 as the job must: the floor with S3 in the loop."""
    import boto3
    import pyarrow as pa
    import pyarrow.csv as pacsv

    body = boto3.client("s3").get_object(Bucket=bucket, Key="in/sales.csv")["Body"]
    types = {name: pa.string() for name in COLUMNS}
    reader = pacsv.open_csv(body, convert_options=pacsv.ConvertOptions(column_types=types))
    return sum(batch.num_rows for batch in reader)


def least_report_s3(bucket: str) -> int:
    """The least any report job does: stream from S3, type the values, sum per day and store.

    No validation, no workbook, no writes: what is left of the job when everything that
    makes it a job is taken away. Returns the number of (date, store) groups.
    """
    import boto3
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    body = boto3.client("s3").get_object(Bucket=bucket, Key="in/sales.csv")["Body"]
    types = {name: pa.string() for name in COLUMNS}
    reader = pacsv.open_csv(body, convert_options=pacsv.ConvertOptions(column_types=types))
    sums = [("sales", "sum"), ("qty", "sum")]
    parts = []
    for batch in reader:
        typed = pa.table(
            {
                "date": pc.cast(batch.column("date"), pa.date32()),
                "store": batch.column("store"),
                "sales": pc.cast(batch.column("sales"), pa.int64()),
                "qty": pc.cast(batch.column("qty"), pa.int64()),
            }
        )
        part = typed.group_by(["date", "store"]).aggregate(sums)
        parts.append(part.rename_columns(["date", "store", "sales", "qty"]))
    whole = pa.concat_tables(parts).group_by(["date", "store"]).aggregate(sums)
    return whole.num_rows


def duckdb_report(path: str, out: str) -> dict[str, Any]:
    """DuckDB as a user would run it: read the local CSV, group, COPY each sheet to .xlsx.

    The excel extension writes one sheet per file: the summary and the detail go to two
    workbooks. The extension is loaded from its package (``INSTALL excel`` downloads it).
    """
    import duckdb

    con = duckdb.connect()
    con.execute(f"LOAD '{peers.excel_extension()}'")
    types = (
        "{'date': 'DATE', 'store': 'VARCHAR', 'sku': 'VARCHAR', 'sales': 'BIGINT', 'qty': 'BIGINT'}"
    )
    con.execute(
        f"CREATE TABLE sales AS SELECT * FROM read_csv('{path}', header = true, types = {types})"
    )
    con.execute(
        "COPY (SELECT date, store, sum(sales)::BIGINT AS sales, sum(qty)::BIGINT AS qty, "
        "count(*) AS count FROM sales GROUP BY date, store ORDER BY date, store) "
        f"TO '{out}/summary.xlsx' (FORMAT xlsx, HEADER true, SHEET 'summary')"
    )
    con.execute(f"COPY sales TO '{out}/detail.xlsx' (FORMAT xlsx, HEADER true, SHEET 'detail')")
    groups = con.execute("SELECT count(*) FROM (SELECT DISTINCT date, store FROM sales)")
    return {"groups": groups.fetchone()[0], "files": 2}  # type: ignore[index]


def polars_report(path: str, out: str) -> dict[str, Any]:
    """polars as a user would run it: read_csv (SKU as text), group_by, one workbook with
    the summary and detail sheets written by rustpy-xlsxwriter (rust_xlsxwriter)."""
    import polars as pl
    import rustpy_xlsxwriter as rx

    schema = {"date": pl.Date, "store": pl.String, "sku": pl.String}
    frame = pl.read_csv(path, schema_overrides=schema)
    summary = (
        frame.group_by("date", "store")
        .agg(pl.col("sales").sum(), pl.col("qty").sum(), pl.len().alias("count"))
        .sort("date", "store")
    )
    sheets = [("summary", summary), ("detail", frame)]
    rx.write_worksheets(sheets, f"{out}/report.xlsx", datetime_format="yyyy-mm-dd")
    return {"groups": summary.height, "files": 1}


def sheet_rows(book: Path) -> int:
    """The rows of the workbook's largest sheet (its detail), counted in the sheet's XML."""
    import zipfile

    with zipfile.ZipFile(book) as z:
        sheets = [i for i in z.infolist() if i.filename.startswith("xl/worksheets/sheet")]
        largest = max(sheets, key=lambda i: i.file_size)
        count, tail = 0, b""
        with z.open(largest) as f:
            while chunk := f.read(1 << 20):
                data = tail + chunk  # a tail shorter than "<row " cannot hold a whole one
                count += data.count(b"<row ") + data.count(b"<row>")
                tail = data[-4:]
        return count


def compare_summary(book: Path, sheet: str, names: tuple[str, ...], path: str) -> str | None:
    """Compare a workbook's per-day-and-store sheet with the seed's groupby, exactly.

    ``names`` are its headers for date, store, sales, qty and row count; the table starts
    below the row whose first cell is the first name. None when identical, else the first
    row that differs.
    """
    import datetime as dt

    import pandas as pd
    from openpyxl import load_workbook

    cached = Path(path).with_suffix(".daily.parquet")
    if not cached.exists():
        seed_summary(path).to_parquet(cached)
    frame = pd.read_parquet(cached)
    expected = [(d.date(), s, int(a), int(q), int(n)) for d, s, a, q, n in frame.itertuples(False)]
    wb = load_workbook(book, read_only=True)
    rows = wb[sheet].iter_rows(values_only=True)
    header = next(row for row in rows if row and row[0] == names[0])  # below the lead lines
    at = [header.index(name) for name in names]

    def number(value: Any) -> Any:  # some writers store every number as a float
        return int(value) if isinstance(value, float) and value.is_integer() else value

    got = []
    for row in rows:
        day, store, sales, qty, count = (row[i] for i in at)
        if day is None:  # a blank line or a total below the table ends it
            break
        day = day.date() if isinstance(day, dt.datetime) else day
        got.append((day, store, number(sales), number(qty), number(count)))
    wb.close()
    if got == expected:
        return None
    pairs = enumerate(zip([*got, None], [*expected, None], strict=False))
    i, (job, seed) = next((i, pair) for i, pair in pairs if pair[0] != pair[1])
    return f"sheet row {i + 2}: {job} != seed {seed}"


def verify_peer(out: str, path: str) -> dict[str, Any]:
    """A peer's summary against the seed's groupby; the rows of its detail sheet."""
    folder = Path(out)
    summary = folder / "summary.xlsx" if (folder / "summary.xlsx").exists() else None
    book = summary or folder / "report.xlsx"
    detail = folder / "detail.xlsx" if summary else book
    diff = compare_summary(book, "summary", PEER_COLUMNS, path)
    return {"diff": diff, "detail_sheet_rows": sheet_rows(detail)}


def upload(bucket: str, path: str) -> None:
    """Create ``bucket`` and put the CSV at in/sales.csv (endpoint and keys from the env)."""
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(path, bucket, "in/sales.csv")


def verify(bucket: str, path: str) -> dict[str, Any]:
    """Compare the job's 日次売上 sheet with the seed's groupby, exactly; look for the spill."""
    import boto3

    s3 = boto3.client("s3")
    local = OUT / f"{bucket}.xlsx"
    s3.download_file(bucket, REPORT_KEY, str(local))
    spilled = s3.list_objects_v2(Bucket=bucket, Prefix=SPILL_KEY).get("KeyCount", 0) > 0
    diff = compare_summary(local, "日次売上", JOB_COLUMNS, path)
    rows = sheet_rows(local)
    local.unlink()
    return {"diff": diff, "spilled": spilled, "detail_sheet_rows": rows}


def print_profile(prof: str) -> None:
    """The top 15 functions of a cProfile file, by cumulative and by own time."""
    import pstats

    for key in ("cumulative", "tottime"):
        stream = io.StringIO()
        stats = pstats.Stats(prof, stream=stream)
        stats.strip_dirs().sort_stats(key).print_stats(15)
        text = stream.getvalue()
        print(f"Top 15 by {key}:\n\n```\n{text[text.index('ncalls') :].rstrip()}\n```\n")


def child(mode: str, args: list[str]) -> None:
    """Do one piece of work; print its result, if any, as one JSON line with the seconds taken."""
    start = time.perf_counter()
    result = {
        "generate": lambda: generate(int(args[0]), Path(args[1])),
        "seed": lambda: seed_template(args[0], args[1]),
        "seed-agg": lambda: {"groups": len(seed_summary(args[0]))},
        "arrow": lambda: {"rows": arrow_parse(args[0])},
        "arrow-s3": lambda: {"rows": arrow_parse_s3(args[0])},
        "least-s3": lambda: {"groups": least_report_s3(args[0])},
        "duckdb": lambda: duckdb_report(args[0], args[1]),
        "polars": lambda: polars_report(args[0], args[1]),
        "verify-peer": lambda: verify_peer(args[0], args[1]),
        "profile": lambda: print_profile(args[0]),
        "upload": lambda: upload(args[0], args[1]),
        "verify": lambda: verify(args[0], args[1]),
    }[mode]()
    if result is not None:
        print(json.dumps({**result, "seconds": round(time.perf_counter() - start, 2)}))


# --- The parent imports the standard library only ------------------------------------------
# At exec, Linux carries the old process image's peak RSS into the child's ru_maxrss, so the
# parent stays small and leaves pandas, boto3 and the data to its children.


@dataclass
class Run:
    size: str
    variant: str
    wall: float
    rss_mb: float
    code: int
    last_line: str
    status: str


def slug(*words: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", " ".join(words).lower()).strip("-")


def measure(size: str, variant: str, cmd: list[str], env: dict[str, str]) -> Run:
    """Run ``cmd`` as its own process; wall time around it, peak RSS of that process alone."""
    log = OUT / "logs" / slug(size, variant)
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{size:>5} {variant} ...", end=" ", flush=True)
    with out.open("wb") as stdout, err.open("wb") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage, not all children's
        wall = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    last_line = (out.read_text(errors="replace").splitlines() or [""])[-1]
    error = (err.read_text(errors="replace").strip().splitlines() or [""])[-1]
    status = "ok" if code == 0 else f"failed, exit {code}: {error[:120]}"
    run = Run(size, variant, wall, usage.ru_maxrss * 1024 / 1e6, code, last_line, status)
    print(f"{wall:.1f} s, {run.rss_mb:.0f} MB, exit {code}", flush=True)
    return run


def helper(mode: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run an unmeasured child and return its last stdout line."""
    cmd = [sys.executable, __file__, "--child", mode, *args]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return (done.stdout.strip().splitlines() or [""])[-1]


def dataset(rows: int) -> Path:
    """The cached CSV of ``rows`` rows, generated once per set of parameters."""
    tag = hashlib.sha256(json.dumps([DATA, DATA_VERSION, rows]).encode()).hexdigest()[:10]
    path = OUT / f"sales_{rows}_{tag}.csv"
    if not path.exists():
        start = time.perf_counter()
        helper("generate", str(rows), str(path))
        print(f"generated {path.name} in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def job_run(size: str, variant: str, csv: Path, env: dict[str, str], bucket_tag: str = "") -> Run:
    """Upload the CSV into a fresh bucket, run the report job, then check its workbook."""
    bucket = slug("bench", size, variant, bucket_tag)
    helper("upload", bucket, str(csv), env=env)
    cmd = [sys.executable, "-m", "ochinai", "report", "--store", f"s3://{bucket}"]
    run = measure(size, variant, [*cmd, "--input", "in/sales.csv", "--date", BUSINESS_DATE], env)
    lines = (OUT / "logs" / f"{slug(size, variant)}.out").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    summary = events[-1] if events else {}
    run.last_line = json.dumps({k: summary.get(k) for k in JOB_FIELDS}, ensure_ascii=False)
    if run.code != 0 or summary.get("outcome") != "ok":
        errors = [e["message"] for e in events if e.get("severity") in ("ERROR", "CRITICAL")]
        detail = errors[0] if errors else run.status
        run.status = f"{summary.get('outcome', 'failed')}, exit {run.code}: {detail[:160]}"
        return run
    try:
        check = json.loads(helper("verify", bucket, str(csv), env=env))
    except subprocess.CalledProcessError as exc:
        run.status = f"ok; the check failed: {exc.stderr.strip().splitlines()[-1][:160]}"
        return run
    run.status = (
        f"ok, TOTALS DIFFER at {check['diff']}" if check["diff"] else "ok, totals identical"
    )
    run.status += f", detail sheet {check['detail_sheet_rows']:,} rows"
    run.status += ", spilled" if check["spilled"] else ""
    return run


def peer_run(label: str, peer: str, csv: Path, env: dict[str, str]) -> Run:
    """One peer on the local CSV into a fresh local folder, then its workbook checked."""
    folder = OUT / "peers" / slug(label, peer)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--child", PEER_MODES[peer], str(csv), str(folder)]
    run = measure(label, PEER_VARIANTS[peer], cmd, env)
    if run.code != 0:
        return run
    try:
        check = json.loads(helper("verify-peer", str(folder), str(csv), env=env))
    except subprocess.CalledProcessError as exc:
        run.status = f"ok; the check failed: {exc.stderr.strip().splitlines()[-1][:160]}"
        return run
    run.status = (
        f"ok, TOTALS DIFFER at {check['diff']}" if check["diff"] else "ok, totals identical"
    )
    run.status += f", detail sheet {check['detail_sheet_rows']:,} rows"
    return run


def peer_rounds(
    label: str, csv: Path, env: dict[str, str], rounds: int, found: dict[str, str]
) -> list[Run]:
    """The job with its full detail and each installed peer, ``rounds`` rounds interleaved.

    The job reads its CSV from S3 and writes the workbook there; the peers read the local
    file and write local files (the comparison leans toward them). Medians of wall time,
    highest peak RSS. Each round's job gets a bucket of its own.
    """
    runs: dict[str, list[Run]] = {JOB: [], **{PEER_VARIANTS[p]: [] for p in found}}
    for n in range(1, rounds + 1):
        runs[JOB].append(job_run(label, JOB, csv, env, bucket_tag=f"r{n}"))
        for peer in found:
            runs[PEER_VARIANTS[peer]].append(peer_run(label, peer, csv, env))
    return [median_run(r) for r in runs.values()]


def profile_job(label: str, csv: Path, env: dict[str, str]) -> str:
    """One report job run under cProfile (not measured); its top 15 functions two ways."""
    bucket = slug("bench", label, "profile")
    helper("upload", bucket, str(csv), env=env)
    prof = OUT / f"report_{label}.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "ochinai", "report"]
    cmd += ["--store", f"s3://{bucket}", "--input", "in/sales.csv", "--date", BUSINESS_DATE]
    run = measure(label, "report job under cProfile", cmd, env)
    command = f"python -m cProfile -o {prof.relative_to(ROOT)} -m ochinai report " + " ".join(
        cmd[cmd.index("--store") :]
    )
    head = f"### Profile of one {label}-row report job ({run.wall:.1f} s under cProfile)\n\n"
    head += f"`{command}`\n\n"
    done = subprocess.run(
        [sys.executable, __file__, "--child", "profile", str(prof)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return head + done.stdout


def parse_sizes(text: str) -> list[tuple[str, int]]:
    """'100k,1M' -> [('100k', 100000), ('1M', 1000000)]"""
    sizes = []
    for item in text.split(","):
        match = re.fullmatch(r"(\d+)([kKmM]?)", item.strip())
        if not match:
            raise argparse.ArgumentTypeError(f"{item!r} is not a size such as 100k or 5M")
        number, unit = match.group(1), match.group(2).lower()
        sizes.append((number + unit.replace("m", "M"), int(number) * UNITS[unit]))
    return sizes


def job_env(endpoint: str) -> dict[str, str]:
    """This environment without AWS_* and OCHINAI_*, plus what the job needs to reach the server."""
    from tests.servers.s3 import ACCESS_KEY, SECRET_KEY

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OCHINAI_"))}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1", OCHINAI_LOCK="none")
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    return {**env, "OCHINAI_LOG_FORMAT": "json"}


def run_size(
    label: str,
    rows: int,
    skip_seed: bool,
    env: dict[str, str],
    rounds: int = REPEATS,
    found: dict[str, str] | None = None,
) -> list[Run]:
    csv = dataset(rows)
    py = [sys.executable, __file__, "--child"]
    runs = []
    if not skip_seed:
        agg = measure(label, SEED_AGG, [*py, "seed-agg", str(csv)], env)
        agg.status += f", {json.loads(agg.last_line)['seconds']} s inside" if agg.code == 0 else ""
        seed = measure(label, SEED, [*py, "seed", str(csv), str(OUT / f"seed_{label}.xlsx")], env)
        runs += [seed, agg]
    if found and rows < SHEET_ROWS:  # the detail fits in a sheet: the peers run beside the job
        runs += peer_rounds(label, csv, env, rounds, found)
    else:
        runs.append(job_run(label, JOB, csv, env))
    if rows >= 5_000_000:
        runs += detail_off_rounds(label, csv, env)
    return runs


def detail_off_rounds(label: str, csv: Path, env: dict[str, str]) -> list[Run]:
    """The detail-off job against pyarrow alone, REPEATS rounds interleaved, medians kept.

    Each round runs the job on a bucket of its own (a rerun on the same bucket would find
    its report unchanged and skip the work).
    """
    py = [sys.executable, __file__, "--child"]
    no_detail = {**env, "OCHINAI_REPORT_DETAIL_MAX_ROWS": "0"}
    rounds: dict[str, list[Run]] = {JOB_NO_DETAIL: [], ARROW: [], ARROW_S3: [], FLOOR: []}
    for n in range(1, REPEATS + 1):
        job = job_run(label, JOB_NO_DETAIL, csv, no_detail, bucket_tag=f"r{n}")
        bucket = slug("bench", label, JOB_NO_DETAIL, f"r{n}")  # holds the same CSV
        rounds[JOB_NO_DETAIL].append(job)
        rounds[ARROW].append(measure(label, ARROW, [*py, "arrow", str(csv)], env))
        rounds[ARROW_S3].append(measure(label, ARROW_S3, [*py, "arrow-s3", bucket], env))
        floor = measure(label, FLOOR, [*py, "least-s3", bucket], env)
        if floor.code == 0:  # the bare script must get the job's answer to be a fair floor
            groups = json.loads(floor.last_line)["groups"]
            wanted = json.loads(job.last_line or "{}").get("groups")
            floor.status = f"ok, {groups} groups" + ("" if groups == wanted else f" != {wanted}")
        rounds[FLOOR].append(floor)
    return [median_run(runs) for runs in rounds.values()]


def median_run(runs: list[Run]) -> Run:
    """The run with the median wall time, its status naming every round's time."""
    ordered = sorted(runs, key=lambda r: r.wall)
    middle = ordered[len(ordered) // 2]
    failed = next((r for r in runs if r.code != 0 or not r.status.startswith("ok")), None)
    chosen = failed or middle
    times = ", ".join(f"{r.wall:.2f}" for r in runs)
    return Run(
        chosen.size,
        chosen.variant,
        middle.wall,
        max(r.rss_mb for r in runs),
        chosen.code,
        chosen.last_line,
        f"{chosen.status}; median of {len(runs)} rounds ({times} s), highest RSS",
    )


def render(runs: list[Run]) -> str:
    """The results table, the targets and the job's summary lines, in Markdown."""
    by = {(r.size, r.variant): r for r in runs}
    lines = [
        "| size | variant | wall s | peak RSS MB | time / seed | RSS / seed "
        "| time / fastest peer | RSS / fastest peer | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        s = by.get((r.size, SEED))
        t = m = pt = pm = "-"
        if s is not None and s.code == 0:
            t, m = f"{r.wall / s.wall:.2f}", f"{r.rss_mb / s.rss_mb:.2f}"
        peer_runs = [
            p
            for p in runs
            if p.size == r.size and p.variant in PEER_VARIANTS.values() and p.code == 0
        ]
        if peer_runs:
            fastest = min(peer_runs, key=lambda p: p.wall)
            pt, pm = f"{r.wall / fastest.wall:.2f}", f"{r.rss_mb / fastest.rss_mb:.2f}"
        row = [r.size, r.variant, f"{r.wall:.1f}", f"{r.rss_mb:.0f}", t, m, pt, pm, r.status]
        lines.append("| " + " | ".join(row) + " |")
    targets: list[tuple[str, list[tuple[str, str]], Callable[..., bool]]] = [
        (
            "1M rows, full detail: job wall time <= 0.4x seed and peak RSS <= 0.5x seed",
            [("1M", JOB), ("1M", SEED)],
            lambda j, s: s.code == 0 and j.wall <= 0.4 * s.wall and j.rss_mb <= 0.5 * s.rss_mb,
        ),
        (
            "5M rows: job completes with peak RSS < 600 MB and spills the detail",
            [("5M", JOB)],
            lambda j: j.rss_mb < 600 and "spilled" in j.status,
        ),
        (
            "5M rows, detail off: job wall time < 3x pyarrow parsing alone (medians)",
            [("5M", JOB_NO_DETAIL), ("5M", ARROW)],
            lambda j, a: a.code == 0 and j.wall < 3 * a.wall,
        ),
    ]
    lines += ["", "Targets:", ""]
    for text, keys, test in targets:
        got = [by.get(k) for k in keys]
        ok = None not in got and got[0].status.startswith("ok, totals identical") and test(*got)
        lines.append(f"- {'not measured' if None in got else 'PASS' if ok else 'FAIL'}: {text}")
    base = by.get(("5M", ARROW))
    if base is not None and base.code == 0:
        lines += ["", "5M rows, medians, against pyarrow parsing the local file alone:", ""]
        for variant in (ARROW_S3, FLOOR, JOB_NO_DETAIL):
            r = by.get(("5M", variant))
            if r is not None and r.code == 0:
                lines.append(f"- {variant}: {r.wall:.2f} s = {r.wall / base.wall:.2f}x")
    lines += ["", "Job summary lines:", ""]
    lines += [
        f"- {r.size}, {r.variant}: `{r.last_line}`" for r in runs if r.variant.startswith(JOB)
    ]
    return "\n".join(lines) + "\n"


def peer_lines(found: dict[str, str], skipped: list[str]) -> str:
    """Which peers ran, with their packages' versions, and which were skipped."""
    lines = [f"- {peer}: {versions}" for peer, versions in found.items()]
    lines += [f"- {line}" for line in skipped]
    return "Peers:\n\n" + "\n".join(lines) + "\n\n" if lines else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=parse_sizes, default="100k,1M,5M", help="row counts")
    parser.add_argument("--skip-seed", action="store_true", help="do not run the seed template")
    parser.add_argument(
        "--rounds", type=int, default=REPEATS, help="rounds of the job beside the peers (medians)"
    )
    parser.add_argument("--no-peers", action="store_true", help="without DuckDB and polars")
    parser.add_argument(
        "--profile", action="store_true", help="also one job per size under cProfile, at the end"
    )
    args = parser.parse_args(argv)
    from tests.servers.s3 import WeedMini

    found, skipped = ({}, []) if args.no_peers else peers.available(peers.REPORT_NEEDS)
    for line in skipped:
        print(line, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(OUT / "weed", ignore_errors=True)
    weed = WeedMini(OUT / "weed")
    started = time.perf_counter()
    load = os.getloadavg()
    profiles = []
    try:
        env = job_env(weed.start())
        runs = [
            r
            for label, rows in args.sizes
            for r in run_size(label, rows, args.skip_seed, env, args.rounds, found)
        ]
        load_after = os.getloadavg()
        if args.profile:
            profiles = [profile_job(label, dataset(rows), env) for label, rows in args.sizes]
    finally:
        weed.stop()
        shutil.rmtree(OUT / "weed", ignore_errors=True)
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    report = f"Report benchmark, {time.strftime('%Y-%m-%d')}, {machine}\n\n"
    report += f"Command: `{' '.join(['python', 'bench/report_bench.py', *argv])}`\n\n"
    report += f"Load average (1 min) {load[0]:.2f} at the start, {load_after[0]:.2f} at the end\n\n"
    report += peer_lines(found, skipped) + render(runs)
    report += f"\nWhole benchmark: {time.perf_counter() - started:.0f} s\n"
    report += "".join(f"\n{text}" for text in profiles)
    (OUT / "report_bench.md").write_text(report, encoding="utf-8")
    print("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
