"""Run any registered job by name as a user would, and a throwaway job to run."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from ochinai import cli
from ochinai.jobs.report.sheetzip import THREAD_NAME as DEFLATE_THREAD
from ochinai.runtime import storage
from ochinai.runtime.declare import parse_bool, parse_positive_int, parse_text, setting
from ochinai.runtime.following import THREAD_NAME as DOWNLOAD_THREAD
from ochinai.runtime.job import Action, Context, Job, Summary


@dataclass
class Result:
    """What one command printed and returned."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[dict[str, Any]]:
        """Every stdout line, parsed: a line that is not JSON fails the test here."""
        return [json.loads(line) for line in self.out.splitlines()]

    @property
    def summary(self) -> dict[str, Any]:
        """The run's one summary line."""
        [summary] = [line for line in self.lines if line.get("event") == "summary"]
        return summary


def run_command(argv: list[str], env: Mapping[str, str]) -> Result:
    """``ochinai ARGV...`` in this process with ``env`` as its environment; JSON logs."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv, env={"OCHINAI_LOG_FORMAT": "json", **env})
    return Result(code, out.getvalue(), err.getvalue())


BUG = 70  # the one exit code whose logs carry a traceback


def assert_no_traceback(code: int, output: str, argv: object) -> None:
    """Every run a test makes, whatever it tests: a traceback only for a bug (exit 70).

    An expected error (bad input, a setting, a missing key, an unreachable server) is one
    line naming what to fix, in both log formats; this is checked here, on every command
    every test runs, rather than in the tests of errors one by one.
    """
    if code != BUG and "Traceback (most recent call last)" in output:
        start = output.index("Traceback (most recent call last)")
        raise AssertionError(
            f"ochinai {argv} ended {code}, not a bug, yet logged a traceback:\n"
            + output[max(0, start - 300) : start + 1500]
        )


def run_job(job: str, *args: str, env: Mapping[str, str]) -> Result:
    """Run the registered job ``job`` (``report``, ``demo``, ...) with flags ``args``."""
    assert job in cli.registry(), f"{job} is not a registered job"
    return run_command([job, *args], env)


class _Tee(io.TextIOBase):
    """Writes to the stream it wraps and keeps a copy."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return int(self.stream.write(text))

    def flush(self) -> None:
        self.stream.flush()


@pytest.fixture(autouse=True)
def endpoints_forgotten() -> Iterator[None]:
    """A process remembers the S3 endpoints it could not reach (one run's life); a test's
    port may be another test's server later on."""
    yield
    storage._unreachable.clear()


@pytest.fixture(autouse=True)
def no_traceback_but_for_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``cli.main`` a test calls, however it reads the output, is checked so."""
    real = cli.main

    def checked(argv: Any = None, env: Any = None) -> int:
        out, err = _Tee(sys.stdout), _Tee(sys.stderr)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = real(argv, env)
        assert_no_traceback(code, out.copy.getvalue() + err.copy.getvalue(), argv)
        ours = (DEFLATE_THREAD, DOWNLOAD_THREAD)
        left = [t.name for t in threading.enumerate() if t.name in ours and t.is_alive()]
        assert not left, f"{argv}: threads outlived the run: {left}"
        return code

    monkeypatch.setattr(cli, "main", checked)


# --- a throwaway job, registered by the ``demo_job`` fixture ----------------------------


@dataclass(frozen=True)
class DemoSettings:
    """The demo job's settings."""

    greeting: str = setting("OCHINAI_DEMO_GREETING", parse_text, "hello", "what the job writes")
    times: int = setting("OCHINAI_DEMO_TIMES", parse_positive_int, "1", "how many lines")


@dataclass(frozen=True)
class ShoutSettings(DemoSettings):
    """``demo shout`` reads one more setting."""

    loud: bool = setting("OCHINAI_DEMO_LOUD", parse_bool, "false", "upper case")


def demo_run(ctx: Context[DemoSettings]) -> Summary:
    """Write the greeting for the business date, create-only; a rerun finds it unchanged."""
    body = f"{ctx.settings.greeting}\n" * ctx.settings.times
    result = ctx.store.put(f"demo/{ctx.business_date}.txt", body.encode(), if_none_match=True)
    outcome = "unchanged" if result.outcome == "unchanged" else "ok"
    return Summary(outcome, {"written": result.outcome, "date": ctx.business_date.isoformat()})


def demo_shout(ctx: Context[ShoutSettings]) -> Summary:
    """Log the greeting, loudly when told; writes nothing."""
    text = ctx.settings.greeting.upper() if ctx.settings.loud else ctx.settings.greeting
    ctx.log.info("shouting %s", text)
    return Summary("ok", {"said": text})


DEMO = Job(
    name="demo",
    help="a throwaway job for the tests",
    settings=DemoSettings,
    actions={
        "run": Action(demo_run, "write the greeting"),
        "shout": Action(demo_shout, "log the greeting", settings=ShoutSettings, lock=False),
    },
)


@pytest.fixture
def demo_job(monkeypatch: pytest.MonkeyPatch) -> Iterator[Job]:
    """The demo job in the registry for one test."""
    monkeypatch.setitem(cli.registry(), DEMO.name, DEMO)
    yield DEMO
