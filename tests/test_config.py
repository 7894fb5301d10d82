"""Tests of settings: declared once, typed, read from flags, environment and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from ochinai.cli import registry
from ochinai.jobs.report.settings import ReportSettings
from ochinai.runtime.declare import (
    StoreLocation,
    load,
    masked,
    parse_size,
    parse_store,
    secrets,
    setting,
    settings_of,
)
from ochinai.runtime.errors import EX_CONFIG, ConfigError
from ochinai.runtime.settings import RuntimeSettings, StatusSettings
from tests.harness import run_command

ENV = {"OCHINAI_STORE": "s3://ops-bucket/daily"}


def test_defaults_and_environment() -> None:
    """Unset settings take their defaults; the environment fills the rest."""
    s = load(RuntimeSettings, {**ENV, "OCHINAI_SMTP_PORT": "2525", "OCHINAI_MAIL_TO": "a@x, b@x,"})
    assert s.store == StoreLocation("ops-bucket", "daily")
    assert str(s.timezone) == "Asia/Tokyo"
    assert s.smtp_port == 2525
    assert s.mail_to == ["a@x", "b@x"]
    assert s.smtp_tls == "starttls"
    assert s.multipart_threshold == 64 * 1024 * 1024
    assert s.dry_run is False
    assert s.date is None


def test_flags_override_the_environment() -> None:
    """A flag value wins over the variable."""
    s = load(RuntimeSettings, {**ENV, "OCHINAI_DATE": "2026-01-01"}, {"date": "2026-11-28"})
    assert s.date == date(2026, 11, 28)


def test_durations_accept_the_documented_forms() -> None:
    """26h, 15m, 90s and plain seconds are all durations."""
    assert load(StatusSettings, {**ENV, "OCHINAI_STATUS_MAX_AGE": "26h"}).max_age == 93600
    assert load(StatusSettings, {**ENV, "OCHINAI_STATUS_MAX_AGE": "90"}).max_age == 90


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OCHINAI_STORE": "ops-bucket"}, "OCHINAI_STORE='ops-bucket'"),
        ({**ENV, "OCHINAI_SMTP_PORT": "smtp"}, "OCHINAI_SMTP_PORT='smtp'"),
        ({**ENV, "OCHINAI_SMTP_TLS": "tls"}, "one of starttls | ssl | none"),
        ({**ENV, "OCHINAI_TIMEZONE": "Tokyo"}, "IANA time zone"),
        ({**ENV, "OCHINAI_DATE": "28/11/2026"}, "YYYY-MM-DD"),
        ({**ENV, "OCHINAI_RUN_ID": "a/b"}, "OCHINAI_RUN_ID='a/b'"),
        ({**ENV, "OCHINAI_MULTIPART_THRESHOLD": "big"}, "64MiB"),
        ({**ENV, "OCHINAI_DRY_RUN": "maybe"}, "true or false"),
    ],
)
def test_bad_values_are_config_errors_naming_variable_value_and_form(
    env: dict[str, str], named: str
) -> None:
    """A bad value is a ConfigError (78) naming the variable, the value and the accepted form."""
    with pytest.raises(ConfigError) as info:
        load(RuntimeSettings, env)
    assert info.value.exit_code == EX_CONFIG
    assert named in str(info.value)
    assert "expected" in str(info.value)


def test_bad_duration_names_the_variable() -> None:
    """A malformed duration names its variable and the forms it takes."""
    with pytest.raises(ConfigError, match=r"OCHINAI_STATUS_MAX_AGE='a day'.*30s, 5m, 2h or 1d"):
        load(StatusSettings, {**ENV, "OCHINAI_STATUS_MAX_AGE": "a day"})


def test_bad_flag_value_names_the_flag() -> None:
    """A bad value from the command line names the flag."""
    with pytest.raises(ConfigError, match="--date='tomorrow'"):
        load(RuntimeSettings, ENV, {"date": "tomorrow"})


def test_missing_store_is_a_config_error() -> None:
    """A job without OCHINAI_STORE stops with a ConfigError that says what to set."""
    with pytest.raises(
        ConfigError,
        match=r"OCHINAI_STORE is not set and no --store was given; expected s3://BUCKET",
    ):
        load(RuntimeSettings, {})


def test_secret_values_are_masked_and_not_echoed_in_errors() -> None:
    """masked() hides secrets, and secrets are never offered as flags."""
    s = load(
        RuntimeSettings,
        {**ENV, "OCHINAI_SMTP_PASSWORD": "hunter22", "OCHINAI_WEBHOOK_URL": "https://h/T/x"},
    )
    shown = masked(s)
    assert shown["smtp_password"] == "***" and shown["webhook_url"] == "***"
    assert "hunter22" not in repr(shown)
    assert "hunter22" not in repr(s) and "https://h/T/x" not in repr(s)
    assert set(secrets(s)) == {"hunter22", "https://h/T/x"}
    assert all(one.flag is None for one in settings_of(RuntimeSettings) if one.secret)


def all_settings() -> list[Any]:
    """Every setting a command reads: the runtime's, status's and each registered job's."""
    found = [*settings_of(RuntimeSettings), *settings_of(StatusSettings)]
    for job in registry().values():
        for action in job.actions:
            found += settings_of(job.settings_for(action))
    return list(dict.fromkeys(found))


def test_every_setting_has_one_ochinai_variable_and_help() -> None:
    """Each setting is declared once, with its own OCHINAI_ variable, help and accepted form."""
    every = all_settings()
    envs = [s.env for s in every]
    assert len(set(envs)) == len(envs)
    for one in every:
        # The one exception: Kubernetes sets an Indexed Job pod's index under its own name.
        assert one.env.startswith("OCHINAI_") or one.env == "JOB_COMPLETION_INDEX"
        assert one.help and one.form


def test_job_settings_are_typed_attributes() -> None:
    """A job's settings load into its own class: typed attributes, the job's variables only."""
    report = load(ReportSettings, {"OCHINAI_REPORT_DETAIL_MAX_ROWS": "12", "OCHINAI_STORE": "x"})
    assert report.detail_max_rows == 12 and report.input == "in/sales.csv"
    assert report.columns == {} and report.link_expiry == 7 * 86400
    with pytest.raises(ConfigError, match="OCHINAI_REPORT_DETAIL_MAX_ROWS='-1'"):
        load(ReportSettings, {"OCHINAI_REPORT_DETAIL_MAX_ROWS": "-1"})


def test_a_field_that_is_not_a_setting_is_refused() -> None:
    """A settings class whose field was not made by setting() is a TypeError at once."""

    @dataclass(frozen=True)
    class Broken:
        fine: int = setting("OCHINAI_FINE", int, "1", "a fine setting")
        plain: int = 3

    with pytest.raises(TypeError, match=r"Broken.plain is not declared with setting\(\)"):
        settings_of(Broken)


def test_store_and_size_parsers() -> None:
    """s3://BUCKET[/PREFIX] and sizes with units parse as documented."""
    assert parse_store("s3://b-1/") == StoreLocation("b-1", "")
    assert str(parse_store("s3://bkt/a/b/")) == "s3://bkt/a/b"
    assert parse_size("10MB") == 10_000_000
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("123") == 123
    with pytest.raises(ValueError):
        parse_store("s3://Bad_Bucket")


@pytest.mark.parametrize("secret", ["wJalr-SeCrEt-7", "wJalr/SeCrEt+7", "wJ/al/SeCrEt/"])
def test_credentials_in_the_store_url_are_refused_and_never_shown(secret: str) -> None:
    """s3://KEY:SECRET@BUCKET ends 78 saying where credentials go; the log shows no secret,
    a secret holding a / (as AWS secret keys often do) included."""
    env = {"OCHINAI_STORE": f"s3://AKIAEXAMPLE:{secret}@ops-bucket/daily"}
    with pytest.raises(ConfigError) as caught:
        load(StatusSettings, env)
    assert "AWS_SECRET_ACCESS_KEY" in str(caught.value) and "SeCrEt" not in str(caught.value)
    result = run_command(["status"], env)
    assert result.code == EX_CONFIG and "holds credentials" in result.err
    assert "SeCrEt" not in result.out + result.err


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://data", "data", ""),
        ("s3://data/", "data", ""),
        ("s3://my.data/a/b/", "my.data", "a/b"),
    ],
)
def test_store_location_splits_bucket_and_prefix(url: str, bucket: str, prefix: str) -> None:
    """s3://BUCKET[/PREFIX] splits into bucket and prefix without slashes at the ends."""
    assert parse_store(url) == StoreLocation(bucket, prefix)


@pytest.mark.parametrize(
    "url", ["data", "s3://", "s3://Data/x", "https://data/x", "s3://b/x", "s3://bk/a//b"]
)
def test_malformed_store_is_a_config_error(url: str) -> None:
    """A malformed OCHINAI_STORE is a ConfigError naming the value and the accepted form."""
    with pytest.raises(ConfigError) as caught:
        load(RuntimeSettings, {"OCHINAI_STORE": url})
    assert f"OCHINAI_STORE={url!r}" in str(caught.value)
    assert "s3://BUCKET[/PREFIX]" in str(caught.value)


@pytest.mark.parametrize("zone", ["Asia", "Etc/", "../etc/passwd", "Tokyo"])
def test_a_time_zone_that_is_no_zone_is_a_config_error(zone: str) -> None:
    """A directory of the zone database or a made-up name is 78, naming the value."""
    with pytest.raises(ConfigError, match=f"OCHINAI_TIMEZONE={zone!r}"):
        load(RuntimeSettings, {**ENV, "OCHINAI_TIMEZONE": zone})


def test_a_link_expiry_past_seven_days_is_refused_at_start() -> None:
    """S3 presigns for at most 7 days: 8d is a config error before any work, not after it."""
    assert load(ReportSettings, {"OCHINAI_REPORT_LINK_EXPIRY": "36h"}).link_expiry == 129600
    with pytest.raises(ConfigError, match=r"OCHINAI_REPORT_LINK_EXPIRY='8d'.*7 days"):
        load(ReportSettings, {"OCHINAI_REPORT_LINK_EXPIRY": "8d"})
