"""The command line: ``ochinai <job> [flags]`` and ``ochinai status``; one script per job too."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NoReturn, TextIO

from ochinai import __version__
from ochinai.runtime import logs, status
from ochinai.runtime.errors import EX_USAGE, OchinaiError, UsageError, exit_code_for, outcome_for
from ochinai.runtime.run import JobFunction, Runner, make_store
from ochinai.settings import Setting, Settings, load, settings_for

log = logging.getLogger("ochinai.cli")

# Job name -> "module:function". A job is listed here once its module exists.
JOBS: dict[str, str] = {"report": "ochinai.jobs.report:run"}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 64) instead of exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _add_settings(parser: argparse.ArgumentParser, scope: str) -> None:
    for setting in settings_for(scope):
        if setting.flag is None:
            continue
        shown = "unset" if setting.default is None else setting.default
        help_text = f"{setting.help} [{setting.env}; default {shown}; {setting.form}]"
        if setting.parse.__name__ == "parse_bool":
            parser.add_argument(
                setting.flag, dest=setting.name, action="store_const", const="true", help=help_text
            )
        else:
            parser.add_argument(
                setting.flag, dest=setting.name, metavar=_metavar(setting), help=help_text
            )


def _metavar(setting: Setting) -> str:
    return setting.name.upper()


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; flags come from settings.py."""
    parser = _Parser(prog="ochinai", description="Batch jobs that never fail silently.")
    parser.add_argument("--version", action="version", version=f"ochinai {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for job in sorted(JOBS):
        sub = commands.add_parser(job, help=f"run the {job} job once")
        _add_settings(sub, job)
    sub = commands.add_parser(
        "status",
        help="exit 0 only if each job's last success is younger than --max-age",
        description="Exit codes: 0 every job fresh; 1 a job stale or never succeeded; "
        "75/77/78 the store could not be read.",
    )
    _add_settings(sub, "status")
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_argument(
        "jobs", nargs="*", metavar="JOB", help="jobs to check (default: every job with records)"
    )
    return parser


def _load_job(name: str) -> JobFunction:
    module_name, _, attr = JOBS[name].partition(":")
    fn: JobFunction = getattr(importlib.import_module(module_name), attr)
    return fn


def _configure_logs(
    env: Mapping[str, str], settings: Settings | None, stream: TextIO | None = None
) -> None:
    """Logs as the settings say; before settings parse, as the raw variables say (best effort)."""
    level = settings.log_level if settings else env.get("OCHINAI_LOG_LEVEL", "info").lower()
    fmt = settings.log_format if settings else env.get("OCHINAI_LOG_FORMAT", "auto").lower()
    logs.configure(
        level=level if level in ("debug", "info", "warning", "error") else "info",
        fmt="json" if fmt == "json" else "text" if fmt == "text" else "auto",
        stream=stream,
        secrets=settings.secrets() if settings else (),
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run a command and return its exit code; ``sys.exit(main())`` in scripts."""
    env = os.environ if env is None else env
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        print("run 'ochinai --help' for the commands and flags", file=sys.stderr)
        return EX_USAGE
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "json", "jobs")}
    stream = sys.stderr if args.command == "status" else None
    try:
        settings = load(args.command, env, flags)
    except OchinaiError as exc:
        _configure_logs(env, None, stream)
        code = exit_code_for(exc)
        log.error("%s", exc, extra={"job": args.command})
        log.error(
            "%s finished: %s",
            args.command,
            outcome_for(exc),
            extra={"event": "summary", "outcome": outcome_for(exc), "exit_code": code},
        )
        return code
    _configure_logs(env, settings, stream)
    if args.command == "status":
        return _status(settings, args.jobs, args.json)
    return Runner(args.command, _load_job(args.command), settings).run()


def _status(settings: Settings, jobs: list[str], as_json: bool) -> int:
    try:
        store = make_store(settings, run_id="status")
        statuses = status.check(store, jobs, datetime.now(UTC), settings.max_age)
    except Exception as exc:
        log.error("status check failed: %s", exc, exc_info=exc)
        return exit_code_for(exc)
    render = status.render_json if as_json else status.render_table
    sys.stdout.write(render(statuses, settings.max_age))
    return status.exit_code(statuses)


def _job_script(job: str) -> int:
    return main([job, *sys.argv[1:]])


def main_report() -> int:
    """Console script ``ochinai-report``."""
    return _job_script("report")


def main_monitor() -> int:
    """Console script ``ochinai-monitor``."""
    return _job_script("monitor")


def main_backup() -> int:
    """Console script ``ochinai-backup``."""
    return _job_script("backup")
