"""Measure the backup job against the seed template, on the same local S3 server.

Variants, each its own process (wall time around it, peak RSS of that process alone, as
in report_bench.py), on 1M- and 5M-row sales CSVs (SKUs with leading zeros) and a
1M-row SQLite table:

- seed: per file, get_object -> pd.read_csv(body) (or pd.read_sql) ->
  to_parquet(compression="zstd") -> put_object, as a user of the template would run it;
  then, not timed, the rows whose SKU the seed changed are counted;
- job: ``ochinai backup``, its own verify included;
- verify: ``ochinai backup verify`` of the same generation;
- at 5M CSV rows, "job, encrypted" and "verify, encrypted": the same with
  OCHINAI_BACKUP_KEY set (Parquet Modular Encryption), into generations of their own,
  in the same rounds: compared with the unencrypted job and verify of the same run;
- on the CSVs, "job, verify off" (OCHINAI_BACKUP_VERIFY=false) and the engines a user
  would pick instead (``pip install -e .[bench]``; a peer not installed is skipped), each
  downloading the CSV from the same S3 server to a local file, converting it with every
  column as text (no type inference) to Parquet (zstd) and uploading that: DuckDB
  (``read_csv(all_varchar = true)`` -> ``COPY ... (FORMAT parquet, COMPRESSION zstd)``)
  and polars (``scan_csv(infer_schema=False).sink_parquet(compression="zstd")``).
  Afterwards, not timed, every Parquet file is read back and its values, as text,
  compared with the CSV's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import peers  # noqa: E402  (the standard library only)
from report_bench import OUT, ROOT, Run, dataset, job_env, measure, slug  # noqa: E402

sys.path.insert(0, str(ROOT))  # for tests.servers
DATE = "2026-12-01"
TARGETS = {"rss_ratio": 0.35, "wall_ratio": 1.5, "verify_ratio": 1.0}
# Encrypted against unencrypted, same source, same run (job and verify each).
ENCRYPTED_TARGETS = {"wall_ratio": 1.15, "rss_ratio": 1.1}
NO_VERIFY, NO_VERIFY_PREFIX = "job, verify off", "backup-noverify/"
PEER_VARIANTS = {peers.DUCKDB: "DuckDB", peers.POLARS: "polars"}
PEER_MODES = {peers.DUCKDB: "duckdb", peers.POLARS: "polars"}


# --- children ------------------------------------------------------------------------------


def upload(bucket: str, path: str, key: str) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(path, bucket, key)


def seed(bucket: str, key: str) -> dict[str, Any]:
    """The template: read it whole with pandas, write Parquet, put it back."""
    import io
    import tempfile

    import boto3
    import pandas as pd

    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    if key.endswith(".csv"):
        frame = pd.read_csv(body)
    else:
        with tempfile.NamedTemporaryFile(suffix=".sqlite") as f:
            f.write(body.read())
            f.flush()
            with sqlite3.connect(f.name) as db:
                frame = pd.read_sql("SELECT * FROM sales", db)
    out = io.BytesIO()
    frame.to_parquet(out, compression="zstd")
    s3.put_object(Bucket=bucket, Key=f"seed/{key}.parquet", Body=out.getvalue())
    return {"rows": len(frame)}


def peer_backup(engine: str, bucket: str, key: str, work: str) -> dict[str, Any]:
    """Download the CSV to a local file, convert it with every column as text, upload it."""
    import tempfile

    import boto3

    s3 = boto3.client("s3")
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        local, out = f"{tmp}/in.csv", f"{tmp}/out.parquet"
        s3.download_file(bucket, key, local)
        if engine == "duckdb":
            import duckdb

            con = duckdb.connect()
            con.execute(
                f"COPY (SELECT * FROM read_csv('{local}', header = true, all_varchar = true)) "
                f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
            )
        else:
            import polars as pl

            pl.scan_csv(local, infer_schema=False).sink_parquet(out, compression="zstd")
        size = os.path.getsize(out)
        s3.upload_file(out, bucket, f"peer/{engine}/{key}.parquet")
    return {"bytes": size}


def parquet_keys(bucket: str) -> dict[str, str]:
    """The newest Parquet file under each prefix the benchmark writes to."""
    import boto3

    s3 = boto3.client("s3")
    newest: dict[str, tuple[Any, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith(".parquet"):
                continue
            prefix = "/".join(key.split("/")[:2]) if key.startswith("peer/") else key.split("/")[0]
            if prefix not in newest or item["LastModified"] > newest[prefix][0]:
                newest[prefix] = (item["LastModified"], key)
    return {prefix: key for prefix, (_, key) in newest.items()}


def compare_parquet(bucket: str, csv: str) -> dict[str, Any]:
    """Each Parquet file's values, every one cast to text, against the CSV read as text."""
    import io

    import boto3
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    with open(csv, encoding="utf-8") as f:
        names = f.readline().strip().split(",")
    types = dict.fromkeys(names, pa.string())
    source = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=types))
    s3 = boto3.client("s3")
    results = {}
    for prefix, key in sorted(parquet_keys(bucket).items()):
        if prefix in ("seed", "backup-enc"):
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        table = pq.read_table(io.BytesIO(body))
        text = pa.table([c.cast(pa.string()) for c in table.columns], names=table.column_names)
        if text.column_names != names or text.num_rows != source.num_rows:
            verdict = f"DIFFERENT SHAPE: {text.num_rows} rows, columns {text.column_names}"
        elif text.combine_chunks().equals(source.combine_chunks()):
            verdict = "the same values in the same order"
        else:
            order = [(n, "ascending") for n in names]
            same = text.sort_by(order).combine_chunks().equals(source.sort_by(order))
            verdict = "the same values in another order" if same else "VALUES DIFFER"
        types_ = ", ".join(str(t) for t in table.schema.types)
        results[prefix] = f"{text.num_rows:,} rows, {verdict} ({types_}; {len(body):,} bytes)"
    return results


def seed_loss(bucket: str, key: str, csv: str) -> dict[str, Any]:
    """Rows whose SKU the seed's Parquet does not give back as written."""
    import io

    import boto3
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=bucket, Key=f"seed/{key}.parquet")["Body"].read()
    written = pq.read_table(io.BytesIO(body), columns=["sku"]).column("sku").to_pylist()
    options = pacsv.ConvertOptions(column_types={"sku": "string"}, include_columns=["sku"])
    original = pacsv.read_csv(csv, convert_options=options).column("sku").to_pylist()
    changed = sum(str(a) != b for a, b in zip(written, original, strict=True))
    return {"changed": changed, "rows": len(original)}


def make_sqlite(csv: str, out: str) -> None:
    """The CSV's rows as one table, SKU as TEXT, in a SQLite database."""
    import pyarrow.csv as pacsv

    options = pacsv.ConvertOptions(column_types={"sku": "string", "store": "string"})
    table = pacsv.read_csv(csv, convert_options=options)
    with sqlite3.connect(out) as db:
        db.execute(
            "CREATE TABLE sales (date TEXT, store TEXT, sku TEXT, sales INTEGER, qty INTEGER)"
        )
        columns = [table.column(n).to_pylist() for n in table.column_names]
        db.executemany("INSERT INTO sales VALUES (?, ?, ?, ?, ?)", zip(*columns, strict=True))


def child(mode: str, args: list[str]) -> None:
    start = time.perf_counter()
    result = {
        "upload": lambda: upload(*args),
        "seed": lambda: seed(*args),
        "loss": lambda: seed_loss(*args),
        "peer": lambda: peer_backup(*args),
        "compare": lambda: compare_parquet(*args),
        "sqlite": lambda: make_sqlite(*args),
    }[mode]()
    if result is not None:
        print(json.dumps({**result, "seconds": round(time.perf_counter() - start, 2)}))


# --- the parent: standard library only -----------------------------------------------------


def helper(mode: str, *args: str, env: dict[str, str]) -> str:
    cmd = [sys.executable, __file__, "--child", mode, *args]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return (done.stdout.strip().splitlines() or [""])[-1]


def job_summary(label: str, variant: str) -> dict[str, Any]:
    lines = (OUT / "logs" / f"{slug(label, variant)}.out").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return next((e for e in reversed(events) if e.get("event") == "summary"), {})


def one_source(
    label: str,
    path: Path,
    key: str,
    env: dict[str, str],
    rounds: int,
    encrypted: bool = False,
    found: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Every variant ``rounds`` times, interleaved; each round's job a generation of its own.

    ``encrypted``: also the job and verify with a key, into generations of their own
    (another prefix, the same dates), right after the unencrypted ones of each round.
    ``found``: the peers to run (CSV sources only), with "job, verify off" (another
    prefix, the same dates), after the rest of each round.
    """
    bucket = slug("backup", label)
    helper("upload", bucket, str(path), key, env=env)
    found = found if key.endswith(".csv") else None
    runs: dict[str, list[Run]] = {"seed": [], "job": [], "verify": []}
    if encrypted:
        runs.update({"job, encrypted": [], "verify, encrypted": []})
    if found:
        runs.update({NO_VERIFY: [], **{PEER_VARIANTS[p]: [] for p in found}})
        work = OUT / "peers"
        work.mkdir(parents=True, exist_ok=True)
    job_env_ = {**env, "OCHINAI_BACKUP_SOURCE_PREFIX": key.rsplit("/", 1)[0] + "/"}
    secret = base64.b64encode(os.urandom(32)).decode()  # as `ochinai backup keygen` prints
    keyed = {**job_env_, "OCHINAI_BACKUP_KEY": secret, "OCHINAI_BACKUP_PREFIX": "backup-enc/"}
    job = [sys.executable, "-m", "ochinai", "backup"]
    seed = [sys.executable, __file__, "--child", "seed", bucket, key]
    for n in range(rounds):
        store = ["--store", f"s3://{bucket}", "--date", f"{DATE[:-2]}{n + 1:02d}"]
        runs["seed"].append(measure(label, "seed", seed, env))
        runs["job"].append(measure(label, "job", [*job, *store], job_env_))
        runs["verify"].append(measure(label, "verify", [*job, "verify", *store], job_env_))
        if encrypted:
            runs["job, encrypted"].append(measure(label, "job, encrypted", [*job, *store], keyed))
            verify = [*job, "verify", *store]
            runs["verify, encrypted"].append(measure(label, "verify, encrypted", verify, keyed))
        if found:
            off = {**job_env_, "OCHINAI_BACKUP_VERIFY": "false"}
            off["OCHINAI_BACKUP_PREFIX"] = NO_VERIFY_PREFIX
            runs[NO_VERIFY].append(measure(label, NO_VERIFY, [*job, *store], off))
            for peer in found:
                cmd = [sys.executable, __file__, "--child", "peer", PEER_MODES[peer]]
                run = measure(label, PEER_VARIANTS[peer], [*cmd, bucket, key, str(work)], env)
                runs[PEER_VARIANTS[peer]].append(run)
    summary = job_summary(label, "job")
    loss = (
        json.loads(helper("loss", bucket, key, str(path), env=env)) if key.endswith(".csv") else {}
    )
    compared = json.loads(helper("compare", bucket, str(path), env=env)) if found else {}
    compared.pop("seconds", None)
    return {
        "runs": {v: summarized(r) for v, r in runs.items()},
        "summary": summary,
        "loss": loss,
        "compared": compared,
    }


def summarized(runs: list[Run]) -> Run:
    """The median wall time and the largest peak memory of a variant's rounds."""
    walls = sorted(r.wall for r in runs)
    failed = [r for r in runs if r.code != 0]
    first = failed[0] if failed else runs[0]
    return Run(
        first.size,
        first.variant,
        walls[len(walls) // 2],
        max(r.rss_mb for r in runs),
        first.code,
        first.last_line,
        first.status + ("" if len(runs) == 1 else f" ({len(runs)} rounds)"),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1M,5M", help="CSV sizes: 1M,5M")
    parser.add_argument("--no-sqlite", action="store_true", help="CSVs only")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs of each variant")
    parser.add_argument(
        "--no-encrypted", action="store_true", help="without the encrypted 5M-row variants"
    )
    parser.add_argument("--no-peers", action="store_true", help="without DuckDB and polars")
    args = parser.parse_args(argv)
    from tests.servers.s3 import WeedMini

    found, skipped = ({}, []) if args.no_peers else peers.available(peers.NEEDS)
    for line in skipped:
        print(line, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    sizes = {"1M": 1_000_000, "5M": 5_000_000, "100k": 100_000}
    csvs = {label: dataset(sizes[label]) for label in args.sizes.split(",")}
    shutil.rmtree(OUT / "weed-backup", ignore_errors=True)
    weed = WeedMini(OUT / "weed-backup")
    started = time.perf_counter()
    load = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    try:
        env = job_env(weed.start())
        for label, path in csvs.items():
            results[f"{label} CSV"] = one_source(
                f"{label}-csv",
                path,
                "in/sales.csv",
                env,
                args.rounds,
                encrypted=label == "5M" and not args.no_encrypted,
                found=found,
            )
        if args.no_sqlite:
            csvs = {}
        first = next(iter(csvs.values()), None)
        if first is not None:
            db = OUT / f"{first.stem}.sqlite"
            if not db.exists():
                helper("sqlite", str(first), str(db), env=env)
            label = next(iter(csvs))
            results[f"{label} SQLite"] = one_source(
                f"{label}-sqlite", db, "in/shop.sqlite", env, args.rounds
            )
    finally:
        weed.stop()
        shutil.rmtree(OUT / "weed-backup", ignore_errors=True)
    report = render(results, time.perf_counter() - started)
    lines = [f"Command: `{' '.join(['python', 'bench/backup_bench.py', *argv])}`", ""]
    lines.append(
        f"Load average (1 min) {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )
    peer_lines = [f"- {peer}: {versions}" for peer, versions in found.items()]
    peer_lines += [f"- {line}" for line in skipped]
    lines += ["", "Peers:", "", *peer_lines] if peer_lines else []
    head, _, rest = report.partition("\n\n")
    report = f"{head}\n\n" + "\n".join(lines) + f"\n\n{rest}"
    (OUT / "backup_bench.md").write_text(report, encoding="utf-8")
    print("\n" + report)
    return 0


def render(results: dict[str, dict[str, Any]], seconds: float) -> str:
    lines = [
        f"Backup benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}",
        "",
        "| source | variant | wall s (median) | peak RSS MB (max) | wall / fastest peer "
        "| RSS / fastest peer | status |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        done = [r for v, r in result["runs"].items() if v in PEER_VARIANTS.values()]
        fastest = min((r for r in done if r.code == 0), key=lambda r: r.wall, default=None)
        for variant, run in result["runs"].items():
            wall = rss = "-"
            if fastest is not None:
                wall, rss = f"{run.wall / fastest.wall:.2f}", f"{run.rss_mb / fastest.rss_mb:.2f}"
            lines.append(
                f"| {name} | {variant} | {run.wall:.2f} | {run.rss_mb:.0f} | {wall} | {rss} "
                f"| {run.status} |"
            )
    lines.append("")
    for name, result in results.items():
        if result.get("compared"):
            lines += [f"Read back, {name}: every value as text against the CSV's", ""]
            lines += [f"- {prefix}: {text}" for prefix, text in result["compared"].items()]
            lines.append("")
    for name, result in results.items():
        runs, loss, summary = result["runs"], result["loss"], result["summary"]
        seed, job, verify = runs["seed"], runs["job"], runs["verify"]
        rss, wall, check = job.rss_mb / seed.rss_mb, job.wall / seed.wall, verify.wall / job.wall
        lines.append(
            f"- {name}: job/seed RSS {rss:.2f}x, wall {wall:.2f}x (verify included); "
            f"verify/backup {check:.2f}x; job rows {summary.get('rows')}, "
            f"bytes {summary.get('bytes')}"
            + (
                f"; the seed changed the SKU of {loss['changed']:,} of {loss['rows']:,} rows "
                f"({loss['changed'] / loss['rows']:.0%})"
                if loss
                else ""
            )
        )
        if name.startswith("5M"):
            lines += [
                "",
                "Targets at 5M rows:",
                "",
                f"- {'PASS' if rss <= TARGETS['rss_ratio'] else 'FAIL'}: peak RSS at most 0.35x "
                f"the seed's ({rss:.2f}x)",
                f"- {'PASS' if wall <= TARGETS['wall_ratio'] else 'FAIL'}: wall time, verify "
                f"included, at most 1.5x the seed's ({wall:.2f}x)",
                f"- {'PASS' if check <= TARGETS['verify_ratio'] else 'FAIL'}: verify alone at most "
                f"1x the backup's time ({check:.2f}x)",
                "",
            ]
        if "job, encrypted" in runs:
            lines += encrypted_lines(name, runs)
    lines += ["", f"Whole benchmark: {seconds:.0f} s"]
    return "\n".join(lines) + "\n"


def encrypted_lines(name: str, runs: dict[str, Run]) -> list[str]:
    """The encrypted job and verify against the unencrypted ones of the same run."""
    wall, rss = ENCRYPTED_TARGETS["wall_ratio"], ENCRYPTED_TARGETS["rss_ratio"]
    lines = ["", f"Encrypted (OCHINAI_BACKUP_KEY) against unencrypted, {name}:", ""]
    for variant in ("job", "verify"):
        plain, keyed = runs[variant], runs[f"{variant}, encrypted"]
        w, r = keyed.wall / plain.wall, keyed.rss_mb / plain.rss_mb
        lines += [
            f"- {'PASS' if w <= wall else 'FAIL'}: {variant} wall at most {wall}x "
            f"({keyed.wall:.2f} s against {plain.wall:.2f} s, {w:.2f}x)",
            f"- {'PASS' if r <= rss else 'FAIL'}: {variant} peak RSS at most {rss}x "
            f"({keyed.rss_mb:.0f} MB against {plain.rss_mb:.0f} MB, {r:.2f}x)",
        ]
    return [*lines, ""]


if __name__ == "__main__":
    sys.exit(main())
