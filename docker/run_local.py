"""`make run-local`: every job on this machine, twice, against a local S3 server.

With a Docker engine (``docker info`` answers) it runs docker/compose.yaml: MinIO, the
demo price API and the job image. Without one it needs nothing but this repository's
venv: SeaweedFS (`weed mini`, installed with the `local` extra) on loopback ports, the
demo price API (docker/demo_api.py) and an SMTP server that keeps every mail as a file,
all started here and stopped at the end.

Then, either way: the sample inputs (docker/sample_data.py) go into the bucket; every
registered job (`report`, `monitor`, `backup`) runs with OCHINAI_LOCK=s3; all run again,
and the second round is `unchanged` but for the monitor's real changes (the demo shop
changed prices and stock between the two calls, after one 429 with Retry-After); then
`ochinai backup verify`, a restore of the generation, and `ochinai status` (every
registered job).

Everything is kept in the output directory (default `run-local/`, removed by
`make clean-local`): each command's log, the workbook, the mails, the restored backup.
Exit status 0 only when every step did what it should.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import email.utils
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # for tests.servers
sys.path.insert(0, str(HERE))  # for demo_api, sample_data

import demo_api  # noqa: E402
import sample_data  # noqa: E402

from ochinai.jobs import JOBS as REGISTERED  # noqa: E402

BUCKET = "ochinai-local"
JOBS = tuple(REGISTERED)  # every registered job, in the registry's order
COMPOSE = HERE / "compose.yaml"
# What each job's outcome must be in each round: ok, then unchanged (the same inputs
# again), unless the job is here. A job that reads inputs finds them in the bucket when
# docker/sample_data.py puts them there.
ROUNDS = {"monitor": ("unchanged", "ok")}  # a baseline, then the shop's changes
FIRST_ROUND = {job: ROUNDS.get(job, ("ok", "unchanged"))[0] for job in JOBS}
SECOND_ROUND = {job: ROUNDS.get(job, ("ok", "unchanged"))[1] for job in JOBS}
# Two receivers: the reports and the monitor's changes to sales, every alert to ops.
RECEIVERS = {
    "OCHINAI_RECEIVER_SALES": "mailto:uriage@localhost",
    "OCHINAI_RECEIVER_OPS": "mailto:ops@localhost",
    "OCHINAI_ROUTES": "report:sales,changes:sales,failure:ops,reminder:ops,recovery:ops,"
    "stale:ops,drill:ops",
}


@dataclass
class Step:
    """One command run and what its summary line said."""

    title: str
    code: int
    seconds: float
    log: Path
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return str(self.summary.get("outcome", f"exit {self.code}"))


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


def receivers_of(mails: list[Path]) -> dict[str, list[tuple[Path, str]]]:
    """Each mail's path and subject, by the address it went to."""
    found: dict[str, list[tuple[Path, str]]] = {}
    for path in mails:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for address in email.utils.getaddresses([str(message["To"] or "")]):
            found.setdefault(address[1], []).append((path, str(message["Subject"])))
    return found


def say(text: str) -> None:
    print(text, flush=True)


def summary_of(log: Path) -> dict[str, Any]:
    """The last summary event in a JSON-lines log (empty when there is none)."""
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "summary":
                return dict(event)
    return {}


def run_step(title: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Step:
    """Run ``cmd`` with its output in ``log``; one line on the terminal when it ends."""
    print(f"  {title} ...", end=" ", flush=True)
    started = time.monotonic()
    with log.open("wb") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    step = Step(title, code, time.monotonic() - started, log, summary_of(log))
    say(f"{step.outcome} ({step.seconds:.1f} s)")
    if code != 0 and not step.summary:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        say("\n".join("      " + line for line in tail))
    return step


# --- what each job's summary means to a reader -------------------------------------------


def describe(job: str, summary: dict[str, Any]) -> str:
    """The summary in a few words."""
    if not summary:
        return "no summary (see the log)"
    outcome = summary.get("outcome", "?")
    count: Callable[[str], int] = lambda name: int(summary.get(name) or 0)  # noqa: E731
    if job == "report":
        words = f"{count('rows'):,} rows, {count('stores')} stores, {count('days')} days"
        return f"{outcome}: {words}, mail {summary.get('notified', '?')}"
    if job == "monitor":
        kinds = ("new", "price_changed", "price_below", "restocked", "sold_out", "gone")
        changes = ", ".join(f"{k} {count(k)}" for k in kinds if count(k))
        polite = plural(count("requests"), "request")
        if count("retries"):
            polite += f", {count('retries')} retried (waited {summary.get('waited_s', 0)} s)"
        if count("not_modified"):
            polite += ", 304 Not Modified"
        return f"{outcome}: {count('items')} items, {changes or 'no change'} ({polite})"
    if job == "backup":
        files = f"{count('files_written')} files written, {count('files_unchanged')} unchanged"
        return f"{outcome}: {count('sources')} sources, {files}, {count('rows'):,} rows"
    if job == "backup verify":
        return f"{outcome}: {plural(count('verified'), 'file')} read back and checked"
    if job == "backup restore":
        return f"{outcome}: {count('sources')} sources, {count('rows'):,} rows"
    return f"{outcome}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if k != "outcome")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def table(rounds: list[dict[str, Step]]) -> str:
    """Job by job, each round's summary."""
    lines = []
    for job in JOBS:
        lines.append(f"  {job}")
        for n, steps in enumerate(rounds, 1):
            step = steps[job]
            health = step.summary.get("health")
            shown = f"; health {health}" if health else ""
            if health == "failing":
                shown += f" ({step.summary.get('failed_runs')} failed runs in a row)"
            lines.append(f"    run {n}: {describe(job, step.summary)}{shown}  [{step.log.name}]")
    return "\n".join(lines)


# --- the S3 server, the demo API and the mail sink ------------------------------------------


@dataclass
class Local:
    """What the jobs are pointed at: how to run `ochinai`, the bucket, where mails land."""

    ochinai: Callable[[str, list[str], Path], Step]
    get: Callable[[str], bytes]  # an object of the bucket
    list_keys: Callable[[str], list[str]]
    mails: Callable[[], list[Path]]
    where: str
    restore_to: str  # where `backup restore --to` writes, as the job sees it


@contextmanager
def seaweedfs(out: Path, day: date) -> Iterator[Local]:
    """SeaweedFS, the demo API and an SMTP sink in this process's care."""
    import boto3
    from aiosmtpd.controller import Controller
    from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, WeedMini, free_ports, job_environment

    weed = WeedMini(out / "s3")
    mails = MailFolder(out / "mail")
    smtp = Controller(mails, hostname="127.0.0.1", port=free_ports(1)[0])
    api = demo_api.make_server(quiet=True)
    serving = threading.Thread(target=api.serve_forever, name="demo-api", daemon=True)
    try:
        say(f"starting SeaweedFS (weed mini), data in {out / 's3'} ...")
        endpoint = weed.start()
        smtp.start()
        serving.start()
        api_url = f"http://127.0.0.1:{api.server_port}{demo_api.PATH}"
        say(f"  S3 at {endpoint}; demo price API at {api_url}; SMTP at 127.0.0.1:{smtp.port}")
        env = job_environment(
            endpoint,
            f"s3://{BUCKET}",
            OCHINAI_SMTP_HOST="127.0.0.1",
            OCHINAI_SMTP_PORT=str(smtp.port),
            OCHINAI_SMTP_TLS="none",
            OCHINAI_MAIL_FROM="ochinai <ochinai@localhost>",
            **RECEIVERS,
            OCHINAI_MONITOR_URL=api_url,
            OCHINAI_STATUS_MAX_AGES="monitor=1h",
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        say(f"putting the sample inputs into s3://{BUCKET}/ ...")
        for key in sample_data.upload(s3, BUCKET, day):
            say(f"  s3://{BUCKET}/{key}")

        def ochinai(title: str, args: list[str], log: Path) -> Step:
            return run_step(title, [sys.executable, "-m", "ochinai", *args], log, env)

        def keys(prefix: str) -> list[str]:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            return [o["Key"] for page in pages for o in page.get("Contents", [])]

        yield Local(
            ochinai,
            lambda key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
            keys,
            lambda: list(mails.saved),
            "SeaweedFS on this machine",
            str(out / "restored"),
        )
    finally:
        if serving.is_alive():  # shutdown() waits for a serve_forever() that never ran
            api.shutdown()
        api.server_close()
        smtp.stop(no_assert=True)
        weed.stop()
        if weed.log_path.exists():  # beside the jobs' logs, not among the server's data
            shutil.copyfile(weed.log_path, out / "logs" / "s3-server.log")


def docker_answers() -> bool:
    """A Docker engine is there and answers (``docker info``)."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextmanager
def compose(out: Path, day: date, env_file: Path) -> Iterator[Local]:
    """docker/compose.yaml: MinIO, the bucket, the sample inputs, the demo API, the jobs."""
    if not env_file.exists():
        shutil.copyfile(HERE / ".env.example", env_file)
        say(f"wrote {env_file} from .env.example (MinIO's credentials; edit to change them)")
    base = ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env_file)]
    env = dict(os.environ)

    def up(log: Path) -> Step:
        return run_step(
            "docker compose up (MinIO, bucket, sample inputs, demo API)",
            [*base, "up", "--build", "--wait", "minio", "demo-api"],
            log,
            env,
        )

    try:
        # MinIO's data from an earlier run would make round 1 unchanged: start empty.
        subprocess.run([*base, "down", "--volumes"], env=env, capture_output=True)
        started = up(out / "logs" / "compose-up.log")
        if started.code != 0:
            raise SystemExit(f"docker compose up failed: see {started.log}")
        inputs = ["--bucket", BUCKET, "--date", str(day)]
        for service, extra in (("create-bucket", []), ("sample-data", inputs)):
            cmd = [*base, "run", "--rm", "-T", service, *extra]
            done = run_step(service, cmd, out / "logs" / f"{service}.log", env)
            if done.code != 0:
                raise SystemExit(f"{service} failed: see {done.log}")

        def ochinai(title: str, args: list[str], log: Path) -> Step:
            service = args[0] if args[0] in JOBS else "status"
            json_logs = ["-e", "OCHINAI_LOG_FORMAT=json"]
            run = [*base, "run", "--rm", "-T", "--no-deps", *json_logs, service, *args]
            return run_step(title, run, log, env)

        def mc(*args: str) -> bytes:
            cmd = [*base, "run", "--rm", "-T", "--no-deps", "--entrypoint", "mc", "create-bucket"]
            cmd += args
            done = subprocess.run(cmd, capture_output=True, env=env)
            return done.stdout if done.returncode == 0 else b""  # e.g. no such prefix

        def keys(prefix: str) -> list[str]:
            listed = mc("ls", "--recursive", "--json", f"local/{BUCKET}/{prefix}")
            entries = [json.loads(line) for line in listed.decode().splitlines() if line]
            return [prefix + e["key"] for e in entries if "key" in e]

        yield Local(
            ochinai,
            lambda key: mc("cat", f"local/{BUCKET}/{key}"),
            keys,
            lambda: [],
            "Docker Compose with MinIO (docker/compose.yaml)",
            "/tmp/restored",  # inside the container: proves the restore, keeps nothing
        )
    finally:
        subprocess.run([*base, "down"], env=env, capture_output=True)


# --- the run ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "run-local", help="output directory")
    # Every job is given this date: the sample sales end on it. Without --date the report
    # would be about the business day before the run (OCHINAI_REPORT_DAY), a day earlier.
    parser.add_argument("--date", type=date.fromisoformat, help="business date (default: today)")
    parser.add_argument(
        "--s3",
        choices=("auto", "docker", "seaweedfs"),
        default="auto",
        help="auto: Docker Compose with MinIO when `docker info` answers, else SeaweedFS",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=HERE / ".env",
        help="Docker Compose: MinIO's credentials (made from docker/.env.example if missing)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    day = args.date or datetime.now(ZoneInfo("Asia/Tokyo")).date()
    use_docker = args.s3 == "docker" or (args.s3 == "auto" and docker_answers())
    shutil.rmtree(out, ignore_errors=True)  # each run starts from an empty bucket
    for folder in ("logs", "mail", "restored"):
        (out / folder).mkdir(parents=True)
    say(f"run-local: business date {day}, output in {out}")
    if use_docker:
        say("a Docker engine answers: using Docker Compose with MinIO")
    else:
        say("no Docker engine answers: using SeaweedFS on this machine (no Docker needed)")
    backend = compose(out, day, args.env_file) if use_docker else seaweedfs(out, day)
    started = time.monotonic()
    with backend as local:
        for key in sample_data.objects(day):  # a copy of every input, as the bucket has it
            (out / "inputs" / key).parent.mkdir(parents=True, exist_ok=True)
            (out / "inputs" / key).write_bytes(local.get(key))
        rounds: list[dict[str, Step]] = []
        for n in (1, 2):
            say(f"round {n}: {', '.join(JOBS)} (OCHINAI_LOCK=s3)")
            rounds.append(
                {
                    job: local.ochinai(
                        f"ochinai {job}", [job, "--date", str(day)], out / "logs" / f"{n}-{job}.log"
                    )
                    for job in JOBS
                }
            )
        say("an alert on purpose: the report of an input that is not there, then again")
        alert = [
            local.ochinai(
                title,
                ["report", "--date", str(day), *extra],
                out / "logs" / f"alert-{n}-report.log",
            )
            for n, (title, extra) in enumerate(
                (
                    ("ochinai report --input in/missing.csv", ["--input", "in/missing.csv"]),
                    ("ochinai report (recovers)", []),
                ),
                1,
            )
        ]
        say("checking")
        verify = local.ochinai(
            "ochinai backup verify",
            ["backup", "verify", "--date", str(day)],
            out / "logs" / "verify.log",
        )
        restore = local.ochinai(
            "ochinai backup restore",
            ["backup", "restore", "--date", str(day), "--to", local.restore_to],
            out / "logs" / "restore.log",
        )
        status = local.ochinai("ochinai status", ["status"], out / "logs" / "status.log")
        workbook = out / f"report_{day:%Y%m%d}.xlsx"
        workbook_key = f"out/{workbook.name}"
        if rounds[0]["report"].code == 0:
            workbook.write_bytes(local.get(workbook_key))
        generation = local.list_keys(f"backup/{day:%Y%m%d}/")
        history = local.list_keys("monitor/history/")
        mails = local.mails()
    seconds = time.monotonic() - started

    say(f"\nrun-local on {local.where}, {seconds:.0f} s:")
    say(table(rounds))
    say(f"  backup verify: {describe('backup verify', verify.summary)}")
    say(f"  backup restore: {describe('backup restore', restore.summary)}, into {local.restore_to}")
    status_text = status.log.read_text(encoding="utf-8", errors="replace").strip()
    say(
        f"  status: exit {status.code}\n"
        + "\n".join("    " + line for line in status_text.splitlines() if not line.startswith("{"))
    )
    say("outputs:")
    say(f"  workbook: {workbook if workbook.exists() else 'none'}")
    say(f"  backup generation: s3://{BUCKET}/backup/{day:%Y%m%d}/ ({len(generation)} objects)")
    say(f"  monitor history: s3://{BUCKET}/monitor/history/ ({plural(len(history), 'file')})")
    say("notices, by receiver (OCHINAI_ROUTES):")
    by_receiver = receivers_of(mails)
    for name, address in (("sales", "uriage@localhost"), ("ops", "ops@localhost")):
        got = by_receiver.get(address, [])
        say(f"  {name} <{address}>: {plural(len(got), 'mail')}")
        for path, subject in got:
            say(f"    {subject}  [{path}]")
    if not mails:
        say("  (no mail: the compose services send none)")
    say(f"  inputs (copies of what was uploaded): {out / 'inputs'}")
    if (out / "s3").is_dir():
        say(f"  the S3 server's data: {out / 's3'}")
    for log in sorted((out / "logs").iterdir()):
        say(f"  log: {log}")

    problems = []
    for job in JOBS:
        first, second = rounds[0][job], rounds[1][job]
        if first.code != 0 or first.outcome != FIRST_ROUND[job]:
            problems.append(
                f"{job} run 1: {first.outcome}, exit {first.code}; expected {FIRST_ROUND[job]} "
                f"(see {first.log})"
            )
        if second.code != 0 or second.outcome != SECOND_ROUND[job]:
            problems.append(
                f"{job} run 2: {second.outcome}, exit {second.code}; expected {SECOND_ROUND[job]}"
            )
    for step in (verify, restore, status):
        if step.code != 0:
            problems.append(f"{step.title} exited {step.code} (see {step.log})")
    if (alert[0].code, alert[1].code) != (65, 0):
        problems.append(
            f"the alert on purpose: exits {alert[0].code} and {alert[1].code}, expected 65 and 0"
        )
    if mails and not ("uriage@localhost" in by_receiver and "ops@localhost" in by_receiver):
        problems.append(f"the notices did not reach both receivers: {sorted(by_receiver)}")
    for problem in problems:
        say(f"FAILED: {problem}")
    say("OK" if not problems else f"{len(problems)} problems")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
