"""The monitor's settings checked across each other when they load: before the lock, before
any request."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ochinai.jobs.monitor.settings import MonitorSettings
from ochinai.runtime.declare import load
from ochinai.runtime.errors import ConfigError
from tests.harness import run_job

NO_URL = "OCHINAI_MONITOR_URL is not set and no --url was given"
NO_PAGES = "OCHINAI_MONITOR_PAGES is not set and no --pages was given"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, NO_URL),
        (
            {"OCHINAI_MONITOR_MODE": "api", "OCHINAI_MONITOR_PAGES": "https://shop.example/p"},
            NO_URL,
        ),
        ({"OCHINAI_MONITOR_MODE": "html"}, NO_PAGES),
        (
            {"OCHINAI_MONITOR_MODE": "html", "OCHINAI_MONITOR_URL": "https://shop.example/api"},
            NO_PAGES,
        ),
    ],
)
def test_what_the_mode_needs_is_said_when_the_settings_load(
    env: dict[str, str], message: str
) -> None:
    """validate() runs as the settings are made, whoever makes them."""
    with pytest.raises(ConfigError, match=message):
        load(MonitorSettings, env)


def test_settings_changed_afterwards_are_checked_again() -> None:
    """dataclasses.replace makes the settings again: the same checks."""
    settings = load(MonitorSettings, {"OCHINAI_MONITOR_URL": "https://shop.example/api"})
    settings.validate()
    with pytest.raises(ConfigError, match=NO_PAGES):
        replace(settings, mode="html")


def test_a_monitor_without_its_url_ends_78_before_the_lock(moto_ops: Any) -> None:
    """``ochinai monitor`` with nothing to watch: 78, saying what to set, and nothing in the
    bucket (no lock taken, no run record)."""
    result = run_job("monitor", env={"OCHINAI_STORE": "s3://ops", "OCHINAI_LOCK": "s3"})
    assert result.code == 78
    assert NO_URL in result.out and result.summary["outcome"] == "config_error"
    assert moto_ops.list_objects_v2(Bucket="ops").get("Contents", []) == []
