"""`make run-local`: the report job on this machine against a local S3 server, no Docker needed.

Starts SeaweedFS (`weed mini`, installed into .venv with the test extras) on loopback ports
and a local SMTP server that saves every mail it receives, puts a generated week of sales
at s3://ochinai-local/in/sales.csv, and runs `ochinai report` for today's business date
twice: the first run builds, writes and mails the workbook; the second finds the same
report already there and changes nothing. Then `ochinai status` checks the run records.

Everything is left in the output directory (default `run-local/`): the workbook, the mail,
the S3 server's log. Exit status 0 only when both runs succeeded, the second one
`unchanged`, and the status check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.servers

BUCKET = "ochinai-local"
INPUT = "in/sales.csv"
STORES = {"001": 1.0, "002": 0.8, "014": 1.3, "027": 0.6, "105": 1.1}
SKUS = [f"{n:06d}" for n in (12, 345, 678, 1024, 2048, 4096, 5000)]


def sample_sales(business_date: date, days: int = 7, seed: int = 20261128) -> bytes:
    """A deterministic week of sales ending on ``business_date``: the same date, the same bytes."""
    rng = random.Random(f"{seed}-{business_date}")
    lines = ["date,store,sku,sales,qty"]
    for back in range(days - 1, -1, -1):
        day = business_date - timedelta(days=back)
        for store, size in STORES.items():
            for _ in range(int(40 * size)):
                qty = rng.randint(1, 6)
                price = rng.choice((180, 398, 1280, 2980, 12800))
                lines.append(f"{day.isoformat()},{store},{rng.choice(SKUS)},{qty * price},{qty}")
    return ("\n".join(lines) + "\n").encode()


class MailFolder:
    """An aiosmtpd handler that saves each message as NN.eml in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: list[Path] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        path = self.folder / f"{len(self.saved) + 1:02d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        self.saved.append(path)
        return "250 Message accepted for delivery"


def free_port() -> int:
    from tests.servers.s3 import free_ports

    return free_ports(1)[0]


def ochinai(env: dict[str, str], *args: str) -> int:
    """Run one `ochinai` command with its logs on this terminal; its exit code."""
    print(f"\n$ ochinai {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "ochinai", *args], env=env).returncode


def last_outcome(s3: Any) -> str:
    """The outcome in the job's run record, as `ochinai status` reads it."""
    try:
        body = s3.get_object(Bucket=BUCKET, Key="_runs/report/latest.json")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return "no run record"
    return str(json.loads(body)["last_run"]["outcome"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "run-local", help="output directory")
    parser.add_argument("--date", type=date.fromisoformat, help="business date (default: today)")
    args = parser.parse_args(argv)

    import boto3
    from aiosmtpd.controller import Controller
    from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, WeedMini

    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)  # each run starts from an empty bucket
    (out / "mail").mkdir(parents=True)
    day = args.date or datetime.now(ZoneInfo("Asia/Tokyo")).date()

    weed = WeedMini(out / "s3")
    mails = MailFolder(out / "mail")
    smtp = Controller(mails, hostname="127.0.0.1", port=free_port())
    try:
        print(f"starting SeaweedFS (weed mini) in {out / 's3'} ...", flush=True)
        endpoint = weed.start()
        smtp.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OCHINAI_"))}
        env.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_REGION="us-east-1",
            OCHINAI_STORE=f"s3://{BUCKET}",
            OCHINAI_SMTP_HOST="127.0.0.1",
            OCHINAI_SMTP_PORT=str(smtp.port),
            OCHINAI_SMTP_TLS="none",
            OCHINAI_MAIL_FROM="ochinai <ochinai@localhost>",
            OCHINAI_MAIL_TO="ops@localhost",
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=INPUT, Body=sample_sales(day))
        print(f"S3 at {endpoint}, sample sales at s3://{BUCKET}/{INPUT}", flush=True)

        outcomes = []
        for _ in range(2):
            code = ochinai(env, "report", "--date", day.isoformat())
            outcomes.append((code, last_outcome(s3)))
        status = ochinai(env, "status", "--max-age", "1h")

        key = f"out/report_{day:%Y%m%d}.xlsx"
        workbook = out / Path(key).name
        if outcomes[0][0] == 0:
            s3.download_file(BUCKET, key, str(workbook))
    finally:
        smtp.stop()
        weed.stop()

    print("\nrun-local:")
    print(f"- first run: exit {outcomes[0][0]}, {outcomes[0][1]}")
    print(f"- second run: exit {outcomes[1][0]}, {outcomes[1][1]} (expected: unchanged)")
    print(f"- status check: exit {status}")
    if workbook.exists():
        print(f"- workbook: {workbook}")
    for mail in mails.saved:
        print(f"- mail: {mail}")
    ok = outcomes == [(0, "ok"), (0, "unchanged")] and status == 0 and len(mails.saved) == 1
    print("- OK" if ok else "- FAILED: see the logs above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
