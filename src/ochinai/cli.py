"""The command line, built from the job registry: ``ochinai <job> [action] [flags]``, ``status``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

from ochinai import __version__
from ochinai.runtime import logs, routes, status
from ochinai.runtime.config import Setting, load, secrets, settings_of
from ochinai.runtime.errors import (
    EX_USAGE,
    OchinaiError,
    PermanentError,
    UsageError,
    exit_code_for,
    outcome_for,
)
from ochinai.runtime.health import Policy
from ochinai.runtime.http import HttpClient
from ochinai.runtime.job import Job
from ochinai.runtime.notify import SendOnce
from ochinai.runtime.run import Runner, make_notifier, make_store, run_id_from
from ochinai.runtime.settings import CommonSettings, RuntimeSettings, StatusSettings

log = logging.getLogger("ochinai.cli")
SCRIPT_PREFIX = "ochinai-"  # console scripts ochinai-<job> run that job


def registry() -> dict[str, Job]:
    """The registered jobs (``ochinai.jobs.JOBS``); tests add their own to it."""
    from ochinai.jobs import JOBS

    return JOBS


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 64) instead of exiting 2, and takes no
    abbreviations: ``--dry`` in a CronJob must not change meaning when a flag is added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _add_settings(parser: argparse.ArgumentParser, *classes: type) -> None:
    """A flag per non-secret setting; absent flags stay out of the namespace."""
    for cls in classes:
        for s in settings_of(cls):
            if s.flag is None:
                continue
            shown = "unset" if s.default is None else s.default or "empty"
            if s.is_switch:  # --dry-run / --no-dry-run, over whatever the variable says
                parser.add_argument(
                    s.flag,
                    dest=s.name,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=f"{s.help} [{s.env}; default {shown}]",
                )
            else:
                parser.add_argument(
                    s.flag,
                    dest=s.name,
                    metavar=s.name.upper(),
                    default=argparse.SUPPRESS,
                    help=f"{s.help} [{s.env}; default {shown}; {s.form}]",
                )


def build_parser(jobs: Mapping[str, Job] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; jobs, actions and flags come from the registry."""
    jobs = registry() if jobs is None else jobs
    parser = _Parser(prog="ochinai", description="Batch jobs that never fail silently.")
    parser.add_argument("--version", action="version", version=f"ochinai {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in sorted(jobs):
        job = jobs[name]
        sub = commands.add_parser(name, help=job.help, description=job.actions["run"].help)
        _add_settings(sub, RuntimeSettings, job.settings_for("run"))
        others = [action for action in job.actions if action != "run"]
        if others:
            actions = sub.add_subparsers(
                dest="action",
                metavar="ACTION",
                help=f"none: {job.actions['run'].help}; or one of these",
            )
            for action in others:
                spec = job.actions[action]
                sub_action = actions.add_parser(action, help=spec.help, description=spec.help)
                _add_settings(sub_action, RuntimeSettings, job.settings_for(action))
    sub = commands.add_parser(
        "status",
        help="exit 0 only if each job's last success is younger than --max-age",
        description="Exit codes: 0 every job fresh; 1 a job stale or never succeeded; "
        "75/77/78 the store could not be read.",
    )
    _add_settings(sub, StatusSettings)
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_argument(
        "jobs", nargs="*", metavar="JOB", help="jobs to check (default: every job with records)"
    )
    return parser


def _configure_logs(
    env: Mapping[str, str], settings: CommonSettings | None, stream: TextIO | None = None
) -> None:
    """Logs as the settings say; before settings parse, as the raw variables say (best effort)."""
    level = settings.log_level if settings else env.get("OCHINAI_LOG_LEVEL", "info").lower()
    fmt = settings.log_format if settings else env.get("OCHINAI_LOG_FORMAT", "auto").lower()
    logs.configure(
        level=level if level in ("debug", "info", "warning", "error") else "info",
        fmt="json" if fmt == "json" else "text" if fmt == "text" else "auto",
        stream=stream,
        secrets=secrets(settings) if settings else (),
    )


def script_argv(argv: Sequence[str], jobs: Mapping[str, Job]) -> list[str]:
    """The arguments of ``ochinai`` for a console script: ``ochinai-report X`` is ``report X``."""
    name = os.path.basename(argv[0]) if argv else ""
    job = name.removeprefix(SCRIPT_PREFIX)
    if name.startswith(SCRIPT_PREFIX) and job in jobs:
        return [job, *argv[1:]]
    return list(argv[1:])


def every_kind(jobs: Mapping[str, Job]) -> list[str]:
    """The kinds of notice the registered jobs declare, for OCHINAI_ROUTES."""
    return [kind for job in jobs.values() for kind in job.notices]


def dates_joined(argv: Sequence[str]) -> list[str]:
    """``--date -1d`` as ``--date=-1d``: argparse takes a value that begins with ``-`` for
    an option and refuses it, unless it is joined to its flag. Any ``-<digit>...`` is
    joined, so that a wrong one (``-1w``) is named as the date's (78), not a usage error."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--date" and arg[:1] == "-" and arg[1:2].isdigit():
            joined[-1] = f"--date={arg}"
        else:
            joined.append(arg)
    return joined


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run a command and return its exit code; ``sys.exit(main())`` in every console script."""
    env = os.environ if env is None else env
    jobs = registry()
    argv = script_argv(sys.argv, jobs) if argv is None else list(argv)
    try:
        args = build_parser(jobs).parse_args(dates_joined(argv))
    except UsageError as exc:
        print(exc, file=sys.stderr)
        print("run 'ochinai --help' for the commands and flags", file=sys.stderr)
        return EX_USAGE
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    parsed: dict[str, Any] = dict(vars(args))
    command, action = parsed.pop("command"), parsed.pop("action", None) or "run"
    as_json, names = parsed.pop("json", False), parsed.pop("jobs", [])
    # What is left are settings, as the text a variable would hold.
    flags = {k: {True: "true", False: "false"}.get(v, v) for k, v in parsed.items()}
    # Bound before the settings parse, so that every line has the job and a run id.
    run_id = run_id_from(flags.get("run_id"), env.get("OCHINAI_RUN_ID"))
    logs.bind(job=command, run_id=run_id)
    stream = sys.stderr if command == "status" else None
    settings: object = None
    try:
        if command == "status":
            status_settings = load(StatusSettings, env, flags)
            routes.check_kinds(status_settings.routes, every_kind(jobs))
        else:
            job = jobs[command]
            runtime = load(RuntimeSettings, env, flags)
            settings = load(job.settings_for(action), env, flags)
            routes.check_kinds(runtime.routes, every_kind(jobs))
    except OchinaiError as exc:
        _configure_logs(env, None, stream)
        code = exit_code_for(exc)
        log.error("%s", exc)
        log.error(
            "%s finished: %s",
            command,
            outcome_for(exc),
            extra={"event": "summary", "outcome": outcome_for(exc), "exit_code": code},
        )
        return code
    if command == "status":
        _configure_logs(env, status_settings, stream)
        return _status(status_settings, names, as_json)
    _configure_logs(env, runtime)
    logs.redactor.add(*secrets(settings))
    return Runner(job, runtime, settings, action=action, run_id=run_id).run()


def _status(settings: StatusSettings, jobs: list[str], as_json: bool) -> int:
    try:
        store = make_store(settings, run_id="status")
        now = datetime.now(UTC)
        try:
            since: datetime | None = status.first_seen(store, now)
        except PermanentError as exc:  # read-only credentials: no "pending", nothing else lost
            log.warning("cannot record when status first ran (%s); no job is pending", exc)
            since = None
        statuses = status.check(store, jobs, now, settings.max_age, settings.max_ages, since)
        http = HttpClient()
        run_id = run_id_from(None)
        notices = SendOnce(store, make_notifier(settings, http), run_id=run_id, dry_run=False)
        policy = Policy(remind_after=settings.remind_after)
        statuses = status.announce(store, statuses, now, notices, policy)
    except Exception as exc:
        log.error("status check failed: %s", exc, exc_info=exc)
        return exit_code_for(exc)
    render = status.render_json if as_json else status.render_table
    sys.stdout.write(render(statuses, settings.max_age))
    return status.exit_code(statuses)


def settings_table(jobs: Mapping[str, Job]) -> list[tuple[str, Setting]]:
    """Every setting with who reads it (runtime, status or a job), for docs and checks."""
    rows: list[tuple[str, Setting]] = [("every job", s) for s in settings_of(RuntimeSettings)]
    common = set(settings_of(CommonSettings))
    rows += [("status", s) for s in settings_of(StatusSettings) if s not in common]
    for name in sorted(jobs):
        job = jobs[name]
        seen = {s.name for s in settings_of(RuntimeSettings)}
        for action in job.actions:
            for s in settings_of(job.settings_for(action)):
                if s.name not in seen:
                    seen.add(s.name)
                    rows.append((name if action == "run" else f"{name} {action}", s))
    return rows
