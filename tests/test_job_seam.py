"""The job seam: a job registered with one spec gets the CLI, flags, settings, records, status.

The demo job (tests/harness.py) is registered by the ``demo_job`` fixture and by nothing
else: no other file names it, which is the point.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ochinai import cli
from ochinai.runtime.declare import parse_text, setting
from ochinai.runtime.errors import OchinaiError
from ochinai.runtime.job import Action, Context, Job, Summary
from tests.harness import DemoSettings, demo_run, run_command, run_job
from tests.servers.http import Hook

BUCKET = "ops"
ENV = {"OCHINAI_STORE": f"s3://{BUCKET}", "OCHINAI_LOCK": "s3"}


def read_json(client: Any, key: str) -> Any:
    return json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def keys(client: Any, prefix: str = "") -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_help_lists_the_job_its_action_and_their_flags(demo_job: Job) -> None:
    """--help shows the registered job and action, each flag with its variable and default."""
    top = run_command(["--help"], {})
    assert top.code == 0 and "demo" in top.out and "a throwaway job" in top.out
    job = run_command(["demo", "--help"], {})
    job.out = " ".join(job.out.split())
    assert "--greeting" in job.out and "OCHINAI_DEMO_GREETING" in job.out
    assert "default hello" in job.out and "--store" in job.out and "shout" in job.out
    action = run_command(["demo", "shout", "--help"], {})
    assert "--loud" in action.out and "OCHINAI_DEMO_LOUD" in action.out
    assert "--loud" not in job.out  # an action's own flags are its own


def test_a_registered_job_runs_with_its_flags_records_and_status(
    demo_job: Job, moto_ops: Any
) -> None:
    """Flags and variables reach the job; one summary line; run record; status; rerun unchanged."""
    env = {**ENV, "OCHINAI_DEMO_TIMES": "2", "OCHINAI_RUN_ID": "demo-1"}
    first = run_job("demo", "--greeting", "hi", "--date", "2026-11-28", env=env)
    assert first.code == 0
    body = moto_ops.get_object(Bucket=BUCKET, Key="demo/2026-11-28.txt")["Body"].read()
    assert body == b"hi\nhi\n"
    summary = first.summary
    assert (summary["job"], summary["run_id"], summary["outcome"]) == ("demo", "demo-1", "ok")
    assert summary["written"] == "created" and summary["exit_code"] == 0
    assert all(line["job"] == "demo" and line["run_id"] == "demo-1" for line in first.lines)
    record = read_json(moto_ops, "_runs/demo/2026-11-28/demo-1.json")
    assert record["outcome"] == "ok" and record["counts"]["written"] == "created"
    assert read_json(moto_ops, "_runs/demo/latest.json")["last_success"]["run_id"] == "demo-1"
    lock = read_json(moto_ops, "_locks/ochinai-demo.json")
    assert lock["holder"] == "" and record["fence"] == lock["fence"]

    again = run_job(
        "demo", "--greeting", "hi", "--date", "2026-11-28", env={**env, "OCHINAI_RUN_ID": "demo-2"}
    )
    assert (again.code, again.summary["outcome"], again.summary["written"]) == (
        0,
        "unchanged",
        "unchanged",
    )
    status = run_command(["status", "--json", "demo"], ENV)
    assert status.code == 0
    assert json.loads(status.out)["jobs"][0]["state"] == "fresh"


def test_a_sub_action_reads_its_own_settings_and_records_apart(
    demo_job: Job, moto_ops: Any
) -> None:
    """`demo shout --loud` gets its extra setting; it takes no lock and records as demo.shout."""
    result = run_job(
        "demo", "shout", "--loud", "--greeting", "hey", env={**ENV, "OCHINAI_RUN_ID": "s-1"}
    )
    assert result.code == 0 and result.summary["said"] == "HEY"
    assert result.summary["action"] == "shout"
    assert any(line["message"] == "shouting HEY" for line in result.lines)
    assert not keys(moto_ops, "_locks/"), "an action with lock=False takes no lock"
    assert keys(moto_ops, "_runs/demo.shout/")[-1] == "_runs/demo.shout/latest.json"
    assert not keys(moto_ops, "_runs/demo/")
    named = run_command(["status", "--json", "demo.shout"], ENV)
    assert named.code == 0 and json.loads(named.out)["jobs"][0]["state"] == "fresh"
    # A plain status checks the registered jobs (the demo: no run yet) and no sub-action
    # without a max age of its own: the action's records do not count as the job's.
    plain = json.loads(run_command(["status", "--json"], ENV).out)["jobs"]
    assert {j["job"]: j["state"] for j in plain}["demo"] == "pending"
    assert "demo.shout" not in {j["job"] for j in plain}


@pytest.mark.parametrize(
    ("env", "run_id"),
    [({"OCHINAI_RUN_ID": "given-7"}, "given-7"), ({"OCHINAI_RUN_ID": "a/b"}, None)],
    ids=["valid-run-id", "invalid-run-id"],
)
def test_a_run_that_fails_before_its_settings_parse_names_job_and_run(
    demo_job: Job, env: dict[str, str], run_id: str | None
) -> None:
    """Every line of a config error (78) has the job and a run id, the given one when valid."""
    result = run_job("demo", env={**ENV, "OCHINAI_DEMO_TIMES": "0", **env})
    assert result.code == 78
    assert any("OCHINAI_" in line["message"] for line in result.lines)
    ids = {line["run_id"] for line in result.lines}
    assert len(ids) == 1 and None not in ids
    if run_id:
        assert ids == {run_id}
    assert {line["job"] for line in result.lines} == {"demo"}
    assert result.summary["outcome"] == "config_error"


def test_a_dry_run_takes_no_lock_and_writes_nothing(demo_job: Job, moto_ops: Any) -> None:
    """--dry-run with the S3 lock says no lock was taken, warns of nothing, writes nothing."""
    result = run_job("demo", "--dry-run", env=ENV)
    assert result.code == 0
    messages = [line["message"] for line in result.lines]
    assert "dry run: no lock taken" in messages
    assert not any("acquired lock" in m for m in messages)
    assert not [line for line in result.lines if line["severity"] == "WARNING"]
    assert keys(moto_ops) == []


def test_a_switch_flag_overrides_the_variable_both_ways(demo_job: Job, moto_ops: Any) -> None:
    """--no-dry-run beats OCHINAI_DRY_RUN=true; --dry-run beats false."""
    real = run_job("demo", "--no-dry-run", env={**ENV, "OCHINAI_DRY_RUN": "true"})
    assert real.code == 0 and keys(moto_ops, "demo/")
    dry = run_job("demo", "--dry-run", "--date", "2026-01-01", env=ENV)
    assert dry.code == 0 and "demo/2026-01-01.txt" not in keys(moto_ops, "demo/")


def test_a_dry_run_sends_no_notice_and_no_post(demo_job: Job, moto_ops: Any, hook: Hook) -> None:
    """In a dry run a notice is not sent (``dry_run``), and HTTP refuses a POST."""
    from ochinai.runtime.declare import load
    from ochinai.runtime.notify import Notice
    from ochinai.runtime.run import Runner
    from ochinai.runtime.settings import RuntimeSettings

    said: dict[str, Any] = {}

    def job(ctx: Context[DemoSettings]) -> Summary:
        said["notice"] = ctx.notices.send(Notice("demo/2026-11-28/x", "subject", "text"))
        try:
            ctx.http.request("POST", hook.url, data=b"{}")
        except OchinaiError as exc:
            said["post"] = str(exc)
        return Summary()

    env = {**ENV, "OCHINAI_DRY_RUN": "true", "OCHINAI_WEBHOOK_URL": hook.url}
    spec = Job("demo", "x", DemoSettings, {"run": Action(job, "x")})
    assert Runner(spec, load(RuntimeSettings, env), load(DemoSettings, env)).run() == 0
    assert hook.received == [] and said["notice"] == "dry_run"
    assert "dry run sends nothing but GET" in said["post"]


def test_console_scripts_dispatch_by_their_name(demo_job: Job) -> None:
    """`ochinai-<job>` is `ochinai <job>` for a registered job only."""
    assert cli.script_argv(["/venv/bin/ochinai-demo", "--date", "x"], cli.registry()) == [
        "demo",
        "--date",
        "x",
    ]
    assert cli.script_argv(["/venv/bin/ochinai", "demo"], cli.registry()) == ["demo"]
    assert cli.script_argv(["/venv/bin/ochinai-nope", "x"], cli.registry()) == ["x"]


def test_each_installed_script_is_a_registered_job() -> None:
    """The installed ochinai-report runs the report's --help; a job needs no script of
    its own (`ochinai <job>` runs it), but every script there is runs a registered job."""
    bindir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bindir / "ochinai-report"), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "OCHINAI_REPORT_INPUT" in done.stdout
    installed = {p.name for p in bindir.glob("ochinai-*")}
    assert installed <= {f"ochinai-{name}" for name in cli.registry()}


def test_a_job_setting_may_not_shadow_a_runtime_setting() -> None:
    """A job declaring a variable, name or flag the runtime owns is refused when it is built."""

    @dataclass(frozen=True)
    class Clashing:
        store: str = setting("OCHINAI_DEMO_STORE", parse_text, "x", "shadows --store")

    with pytest.raises(
        ValueError, match=r"setting store \(OCHINAI_DEMO_STORE\) clashes with store"
    ):
        Job("clash", "a bad job", Clashing, {"run": Action(lambda ctx: Summary(), "x")})


def test_a_job_needs_a_run_action_and_a_lowercase_name() -> None:
    """The spec checks itself: a run action, a name fit for keys and Lease names."""
    with pytest.raises(ValueError, match="'run' action"):
        Job("demo2", "x", DemoSettings, {"other": Action(demo_run, "x")})
    with pytest.raises(ValueError, match="lowercase"):
        Job("Demo_2", "x", DemoSettings, {"run": Action(demo_run, "x")})


def test_nothing_outside_its_package_and_the_registry_names_the_report() -> None:
    """Job names live in jobs/<name>/ and jobs/__init__.py only: the runtime and cli name none."""
    src = Path(__file__).resolve().parent.parent / "src" / "ochinai"
    for path in [src / "cli.py", *sorted((src / "runtime").glob("*.py"))]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"[\"']report[\"']", text), f"{path.name} names the report job"


def imports_of(path: Path) -> set[str]:
    """The ochinai modules a source file imports (where it names them, at any depth)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("ochinai.")}


def test_the_layers_import_downwards_only() -> None:
    """runtime/ imports no job; a job imports the runtime and its own package, no other job
    (docs/architecture.md "Layers")."""
    src = Path(__file__).resolve().parent.parent / "src" / "ochinai"
    for path in sorted((src / "runtime").glob("*.py")):
        assert not {m for m in imports_of(path) if m.startswith("ochinai.jobs")}, path.name
    for package in sorted(p for p in (src / "jobs").iterdir() if (p / "__init__.py").exists()):
        for path in sorted(package.glob("*.py")):
            others = {
                m
                for m in imports_of(path)
                if m.startswith("ochinai.jobs.") and m.split(".")[2] != package.name
            }
            assert not others, f"jobs/{package.name}/{path.name} imports {others}"


def test_a_job_may_declare_secrets_but_not_reuse_a_name_or_a_reserved_one() -> None:
    """Secrets (no flag) are fine; a variable used twice or a name the CLI keeps is refused."""

    @dataclass(frozen=True)
    class WithSecret:
        token: str | None = setting("OCHINAI_DEMO_TOKEN", parse_text, None, "x", secret=True)

    Job("secretive", "x", WithSecret, {"run": Action(lambda ctx: Summary(), "x")})

    @dataclass(frozen=True)
    class Twice:
        a: str = setting("OCHINAI_DEMO_A", parse_text, "x", "x")
        b: str = setting("OCHINAI_DEMO_A", parse_text, "x", "x")

    with pytest.raises(ValueError, match="the same variable OCHINAI_DEMO_A"):
        Job("twice", "x", Twice, {"run": Action(lambda ctx: Summary(), "x")})

    @dataclass(frozen=True)
    class Reserved:
        jobs: str = setting("OCHINAI_DEMO_JOBS", parse_text, "x", "x")

    with pytest.raises(ValueError, match="'jobs' is reserved"):
        Job("reserved", "x", Reserved, {"run": Action(lambda ctx: Summary(), "x")})
