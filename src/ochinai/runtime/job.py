"""What a job is to the runtime: a spec (name, settings, actions) and the context it runs in."""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from ochinai.runtime.cancel import cancellation
from ochinai.runtime.declare import Setting, settings_of
from ochinai.runtime.http import HttpClient
from ochinai.runtime.notify import INCIDENT_KINDS, SendOnce
from ochinai.runtime.progress import Progress, terminal_bar
from ochinai.runtime.settings import RuntimeSettings
from ochinai.runtime.storage import Store

S = TypeVar("S")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
# Outcomes whose run did its work; terminated_after_work: a stop signal came after it.
# closed_day: a day on which no business data is expected had none (OCHINAI_CALENDAR)
SUCCESS_OUTCOMES = frozenset({"ok", "unchanged", "closed_day", "terminated_after_work"})


@dataclass
class Summary:
    """What an action returns: ``ok`` or ``unchanged``, and the counts for the summary line."""

    outcome: str = "ok"
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context(Generic[S]):
    """Everything an action gets from the runtime; a job opens no lock, session or log handler.

    ``settings`` are the job's own (typed by its settings class), ``runtime`` the
    runtime's. ``now`` and ``sleep`` are the run's clock: tests pass fakes; ``sleep``
    returns early when the run is asked to stop. ``check()`` between steps of long
    work ends the run there if it was asked to stop (SIGTERM).
    """

    job: str
    action: str
    run_id: str
    business_date: date
    settings: S
    runtime: RuntimeSettings
    store: Store
    notices: SendOnce  # every notice a job sends goes once, through it
    http: HttpClient
    fence: int
    log: logging.Logger
    now: Callable[[], datetime]
    sleep: Callable[[float], None]
    workdir: Path  # this run's own directory under TMPDIR, removed when the run ends

    @property
    def dry_run(self) -> bool:
        """Read and compute, but write, delete and send nothing."""
        return self.runtime.dry_run

    def check(self) -> None:
        """Raise Terminated (exit 75) if a stop signal arrived; a job calls it between steps."""
        cancellation.check()

    def progress(self, what: str, *, total_bytes: int | None = None) -> Progress:
        """A reporter for long work (``update(rows=, bytes=)`` as it goes, ``done()``)."""
        return Progress(what, self.log, self.now, total_bytes=total_bytes, bar=terminal_bar())


def deferred(
    target: str, around: Callable[[], AbstractContextManager[object]] | None = None
) -> Callable[[Context[Any]], Summary]:
    """The function ``"package.module:name"``, imported only when the action runs: a job's
    spec loads its settings alone, so ``--help`` and ``status`` never import pyarrow.
    ``around``, when given, is a context the call runs in (``memory.lean_memory``), kept
    as the function's ``around`` attribute."""
    module, _, name = target.partition(":")

    def call(ctx: Context[Any]) -> Summary:
        fn: Callable[[Context[Any]], Summary] = getattr(importlib.import_module(module), name)
        if around is None:
            return fn(ctx)
        with around():
            return fn(ctx)

    call.__qualname__ = call.__name__ = name
    setattr(call, "around", around)  # noqa: B010 (an attribute mypy does not know of functions)
    return call


@dataclass(frozen=True)
class Action(Generic[S]):
    """One thing a job can do: ``run``, or a sub-action such as ``backup verify``.

    ``settings`` is the action's settings class when it has flags of its own: a
    subclass of the job's settings class that adds them. ``lock=False`` for an action
    that writes nothing and may run beside the job (a listing). ``notices``: the kind
    (notify.KINDS) of every notice of its incidents, when not failure / reminder /
    recovery (a restore drill's are ``drill``), so that OCHINAI_ROUTES can route them.
    """

    fn: Callable[[Context[S]], Summary]
    help: str
    settings: type[S] | None = None
    lock: bool = True
    notices: str | None = None


@dataclass(frozen=True)
class Job:
    """A job's spec, exported as ``JOB`` by its package and listed once in ``ochinai.jobs``."""

    name: str
    help: str
    settings: type
    actions: Mapping[str, Action[Any]]
    # The kinds of notice the job sends beside the runtime's (notify.INCIDENT_KINDS):
    # what OCHINAI_ROUTES may route (a workbook's, a restore drill's).
    notices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"job name {self.name!r}: lowercase letters, digits and '-' only")
        for kind in self.notices:
            if not _NAME.match(kind) or kind in INCIDENT_KINDS:
                raise ValueError(f"job {self.name}: {kind!r} cannot be a kind of its notices")
        if "run" not in self.actions:
            raise ValueError(f"job {self.name}: every job has a 'run' action")
        runtime = settings_of(RuntimeSettings)
        for name, action in self.actions.items():
            if not _NAME.match(name):
                raise ValueError(f"job {self.name}: action {name!r} is not a lowercase name")
            if action.notices is not None and action.notices not in self.notices:
                raise ValueError(
                    f"job {self.name} action {name}: its kind {action.notices!r} is not in "
                    "the job's notices"
                )
            cls = action.settings or self.settings
            if not issubclass(cls, self.settings):
                raise ValueError(
                    f"job {self.name} action {name}: its settings class must extend "
                    f"{self.settings.__name__}"
                )
            # A TypeError here if a field is not a setting(); a ValueError on a clash.
            _check_unique(f"job {self.name} action {name}", [*runtime, *settings_of(cls)])

    def settings_for(self, action: str) -> type:
        """The settings class an action reads."""
        return self.actions[action].settings or self.settings

    @property
    def lock_name(self) -> str:
        """The Lease's name and the S3 lock's file name: ``ochinai-<job>``."""
        return f"ochinai-{self.name}"

    def record_name(self, action: str) -> str:
        """Whose run records a run writes: ``report``, or ``backup.verify`` for a sub-action.

        A dot cannot be in a job name, so a sub-action never shares a job's records.
        """
        return self.name if action == "run" else f"{self.name}.{action}"


# Names the command line keeps for itself (cli.main pops them from the parsed flags).
_RESERVED = frozenset({"command", "action", "json", "jobs", "help", "version"})


def _check_unique(where: str, settings: list[Setting]) -> None:
    """No two settings an action reads share a name, variable or flag; none is reserved."""
    seen: dict[str, Setting] = {}
    for s in settings:
        if s.name in _RESERVED:
            raise ValueError(f"{where}: the setting name {s.name!r} is reserved by the CLI")
        keys = [f"name {s.name}", f"variable {s.env}"] + ([f"flag {s.flag}"] if s.flag else [])
        for key in keys:
            other = seen.setdefault(key, s)
            if other is not s:
                raise ValueError(
                    f"{where}: setting {s.name} ({s.env}) clashes with {other.name} "
                    f"({other.env}): the same {key}"
                )
