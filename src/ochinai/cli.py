"""The command line, built from the job registry: ``ochinai <job> [action] [flags]``, ``status``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

from ochinai import __version__
from ochinai.runtime import logs, routes, status
from ochinai.runtime.declare import Setting, load, secrets, settings_of
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


# The shared settings in `ochinai <command> --help`, after the command's own: a group
# each, by the variable's prefix; any other is the run's.
SHARED_GROUPS = (
    ("storage", ("OCHINAI_STORE", "OCHINAI_S3_", "OCHINAI_LINK_", "OCHINAI_MULTIPART_")),
    ("the lock", ("OCHINAI_LOCK", "OCHINAI_NAMESPACE")),
    ("logs", ("OCHINAI_LOG_",)),
    (
        "notices and monitoring",
        (
            "OCHINAI_SMTP_",
            "OCHINAI_MAIL_",
            "OCHINAI_ROUTES",
            "OCHINAI_NOTIFY_",
            "OCHINAI_REMIND_",
            "OCHINAI_ALERT_",
            "OCHINAI_PUSHGATEWAY_",
        ),
    ),
)
RUN_GROUP = "the run"
HELP_WIDTH = 88  # the description and the epilog, wrapped here to keep their paragraphs
AWS_VARIABLES = (
    "The S3 endpoint and keys are boto3's own variables: AWS_ENDPOINT_URL (your S3 "
    "server's address, such as http://minio:9000; unset: AWS itself), AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_REGION."
)


def _add_settings(
    parser: argparse.ArgumentParser,
    description: str,
    own: Sequence[tuple[str, Sequence[Setting]]],
    shared: Sequence[Setting],
) -> None:
    """The command's flags in --help: its own settings first (``own``: a titled group
    each), then the shared ones grouped (SHARED_GROUPS); the epilog names the AWS
    variables and the settings read from the environment only (secrets)."""
    for title, settings in own:
        _add_flags(parser.add_argument_group(title), settings)
    groups: dict[str, list[Setting]] = {title: [] for title, _ in SHARED_GROUPS}
    groups[RUN_GROUP] = []
    for s in shared:
        title = next((t for t, prefixes in SHARED_GROUPS if s.env.startswith(prefixes)), RUN_GROUP)
        groups[title].append(s)
    for title, settings in groups.items():
        if any(s.flag for s in settings):
            _add_flags(parser.add_argument_group(f"{title} (every job)"), settings)
    every = [s for _, settings in own for s in settings] + list(shared)
    hidden = ", ".join(s.env for s in every if s.flag is None)
    paragraphs = [AWS_VARIABLES]
    if hidden:
        paragraphs.append(
            f"From the environment only, never a flag (a command line shows in ps and in the "
            f"pod spec): {hidden}."
        )
    parser.description = textwrap.fill(description, HELP_WIDTH)
    parser.epilog = "\n\n".join(textwrap.fill(p, HELP_WIDTH) for p in paragraphs)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _add_flags(group: Any, settings: Sequence[Setting]) -> None:
    """A flag per non-secret setting; absent flags stay out of the namespace."""
    for s in settings:
        if s.flag is None:
            continue
        shown = "unset" if s.default is None else s.default or "empty"
        default = "required" if s.required else f"default {shown}"
        if s.is_switch:  # --dry-run / --no-dry-run, over whatever the variable says
            group.add_argument(
                s.flag,
                dest=s.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{s.help} [{s.env}; {default}]",
            )
        else:
            group.add_argument(
                s.flag,
                dest=s.name,
                metavar=s.name.upper(),
                default=argparse.SUPPRESS,
                help=f"{s.help} [{s.env}; {default}; {s.form}]",
            )


def build_parser(jobs: Mapping[str, Job] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; jobs, actions and flags come from the registry."""
    jobs = registry() if jobs is None else jobs
    parser = _Parser(prog="ochinai", description="Batch jobs that never fail silently.")
    parser.add_argument("--version", action="version", version=f"ochinai {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in sorted(jobs):
        _add_job(commands, name, jobs[name])
    _add_status(commands)
    _add_doctor(commands)
    return parser


def _add_job(commands: argparse._SubParsersAction[_Parser], name: str, job: Job) -> None:
    """``ochinai <job> [action] [flags]``: the job's run, and each other action."""
    shared = settings_of(RuntimeSettings)
    others = [action for action in job.actions if action != "run"]
    usage = f"%(prog)s {'[ACTION] ' if others else ''}[flags]"  # the flags are below
    sub = commands.add_parser(name, help=job.help, usage=usage)
    run_settings = settings_of(job.settings_for("run"))
    _add_settings(sub, job.actions["run"].help, [(f"{name} settings", run_settings)], shared)
    if not others:
        return
    actions = sub.add_subparsers(
        dest="action",
        metavar="ACTION",
        help=f"none: {job.actions['run'].help}; or one of these",
        prog=sub.prog,  # not the usage line: an action's help says ochinai JOB ACTION
    )
    for action in others:
        spec = job.actions[action]
        sub_action = actions.add_parser(action, help=spec.help, usage="%(prog)s [flags]")
        mine = settings_of(job.settings_for(action))
        own = [
            (f"{name} {action} settings", [s for s in mine if s not in run_settings]),
            (f"{name} settings", [s for s in mine if s in run_settings]),
        ]
        _add_settings(sub_action, spec.help, own, shared)


def _add_status(commands: argparse._SubParsersAction[_Parser]) -> None:
    """``ochinai status [flags] [JOB ...]``."""
    sub = commands.add_parser(
        "status",
        help="exit 0 only if each job's last success is younger than --max-age",
        usage="%(prog)s [flags] [JOB ...]",
    )
    common = settings_of(CommonSettings)
    _add_settings(
        sub,
        "Exit codes: 0 every job fresh; 1 a job stale or never succeeded; "
        "75/77/78 the store could not be read.",
        [("status settings", [s for s in settings_of(StatusSettings) if s not in common])],
        common,
    )
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_argument(
        "jobs",
        nargs="*",
        metavar="JOB",
        help="jobs to check, or JOB.ACTION (default: every registered job, and each "
        "JOB.ACTION given a max age of its own in OCHINAI_STATUS_MAX_AGES)",
    )


def watched(jobs: Mapping[str, Job], max_ages: Mapping[str, float]) -> list[str]:
    """What ``ochinai status`` checks when no job is named: every registered job (its
    run), then each sub-action that OCHINAI_STATUS_MAX_AGES gives a max age of its own
    (``backup.drill=8d``, the one of a CronJob). Other sub-actions, run by hand now and
    then, are checked only when named."""
    actions = []
    for name in max_ages:
        job, dot, action = name.partition(".")
        if dot and job in jobs and action in jobs[job].actions and action != "run":
            actions.append(name)
    return [*jobs, *actions]


def _add_doctor(commands: argparse._SubParsersAction[_Parser]) -> None:
    """``ochinai doctor [--json] [--fix] [--send-test] [JOB ...]``."""
    sub = commands.add_parser(
        "doctor",
        help="check the deployment end to end (settings, S3, lock, mail, hooks, each job's "
        "own) without doing any work",
        description="Reads the environment as the jobs do. Exit codes: 0 every check passed "
        "(warnings allowed); 1 a check failed; 78 a setting does not parse.",
    )
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_argument(
        "--fix",
        action="store_true",
        help="add the lifecycle rule that aborts incomplete uploads where it is missing",
    )
    sub.add_argument(
        "--send-test", action="store_true", help="send one test notice to every receiver"
    )
    sub.add_argument(
        "jobs", nargs="*", metavar="JOB", help="jobs whose own checks run (default: every job)"
    )


def _configure_logs(
    env: Mapping[str, str],
    settings: CommonSettings | None,
    stream: TextIO | None = None,
    flags: Mapping[str, str | None] | None = None,
) -> None:
    """Logs as the settings say; when they do not parse, as --log-level and --log-format,
    else the variables, say (best effort): a run whose other settings are wrong still
    logs in the form asked for."""
    given = flags or {}
    level = (given.get("log_level") or env.get("OCHINAI_LOG_LEVEL") or "info").strip().lower()
    fmt = (given.get("log_format") or env.get("OCHINAI_LOG_FORMAT") or "auto").strip().lower()
    if settings is not None:
        level, fmt = settings.log_level, settings.log_format
    logs.configure(
        level=level if level in ("debug", "info", "warning", "error") else "info",
        fmt="json" if fmt == "json" else "text" if fmt == "text" else "auto",
        stream=stream,
        secrets=secrets(settings) if settings else (),
    )


def help_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """The help that covers ``argv``'s command: ``ochinai report --help``, ``ochinai backup
    restore --help``; ``ochinai --help`` when no command is named."""
    for word in argv:
        commands = {
            name: sub
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()
        }
        if word in commands:
            parser = commands[word]
    return f"{parser.prog} --help"


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
    parser = build_parser(jobs)
    try:
        args = parser.parse_args(dates_joined(argv))
    except UsageError as exc:
        print(exc, file=sys.stderr)
        print(f"run '{help_command(parser, argv)}' for the flags", file=sys.stderr)
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
    if command == "doctor":  # the table on stdout, logs on stderr
        from ochinai import doctor

        _configure_logs(env, None, sys.stderr)
        fix, send_test = parsed.pop("fix"), parsed.pop("send_test")
        return doctor.main(env, jobs, names, as_json=as_json, fix=fix, send_test=send_test)
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
        _configure_logs(env, None, stream, flags)
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
        return _status(status_settings, names or watched(jobs, status_settings.max_ages), as_json)
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
