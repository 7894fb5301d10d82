"""Tests of settings: environment, flags, defaults and the errors for bad values."""

from __future__ import annotations

from datetime import date

import pytest

from ochinai.runtime.errors import EX_CONFIG, ConfigError
from ochinai.settings import SETTINGS, StoreLocation, load, parse_size, parse_store

ENV = {"OCHINAI_STORE": "s3://ops-bucket/daily"}


def test_defaults_and_environment() -> None:
    """Unset settings take their defaults; the environment fills the rest."""
    s = load("report", {**ENV, "OCHINAI_SMTP_PORT": "2525", "OCHINAI_MAIL_TO": "a@x, b@x,"})
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
    s = load("report", {**ENV, "OCHINAI_DATE": "2026-01-01"}, {"date": "2026-11-28"})
    assert s.date == date(2026, 11, 28)


def test_durations_accept_the_documented_forms() -> None:
    """26h, 15m, 90s and plain seconds are all durations."""
    assert load("status", {**ENV, "OCHINAI_STATUS_MAX_AGE": "26h"}).max_age == 93600
    assert load("status", {**ENV, "OCHINAI_STATUS_MAX_AGE": "90"}).max_age == 90


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
        load("report", env)
    assert info.value.exit_code == EX_CONFIG
    assert named in str(info.value)
    assert "expected" in str(info.value)


def test_bad_duration_names_the_variable() -> None:
    """A malformed duration names its variable and the forms it takes."""
    with pytest.raises(ConfigError, match=r"OCHINAI_STATUS_MAX_AGE='a day'.*15m, 26h"):
        load("status", {**ENV, "OCHINAI_STATUS_MAX_AGE": "a day"})


def test_bad_flag_value_names_the_flag() -> None:
    """A bad value from the command line names the flag."""
    with pytest.raises(ConfigError, match="--date='tomorrow'"):
        load("report", ENV, {"date": "tomorrow"})


def test_missing_store_is_a_config_error() -> None:
    """A job without OCHINAI_STORE stops with a ConfigError that says what to set."""
    with pytest.raises(ConfigError, match=r"OCHINAI_STORE is not set; expected s3://BUCKET"):
        load("report", {})


def test_secret_values_are_masked_and_not_echoed_in_errors() -> None:
    """masked() hides secrets, and secrets are never offered as flags."""
    s = load(
        "report",
        {**ENV, "OCHINAI_SMTP_PASSWORD": "hunter22", "OCHINAI_WEBHOOK_URL": "https://h/T/x"},
    )
    masked = s.masked()
    assert masked["smtp_password"] == "***" and masked["webhook_url"] == "***"
    assert "hunter22" not in repr(masked)
    assert set(s.secrets()) == {"hunter22", "https://h/T/x"}
    assert all(setting.flag is None for setting in SETTINGS if setting.secret)


def test_every_setting_has_an_ochinai_variable_and_help() -> None:
    """Each setting is declared once with its OCHINAI_ variable, help and accepted form."""
    names = [s.name for s in SETTINGS]
    envs = [s.env for s in SETTINGS]
    assert len(set(names)) == len(names) and len(set(envs)) == len(envs)
    for setting in SETTINGS:
        assert setting.env.startswith("OCHINAI_")
        assert setting.help and setting.form


def test_store_and_size_parsers() -> None:
    """s3://BUCKET[/PREFIX] and sizes with units parse as documented."""
    assert parse_store("s3://b-1/") == StoreLocation("b-1", "")
    assert str(parse_store("s3://bkt/a/b/")) == "s3://bkt/a/b"
    assert parse_size("10MB") == 10_000_000
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("123") == 123
    with pytest.raises(ValueError):
        parse_store("s3://Bad_Bucket")


def test_readme_documents_every_setting() -> None:
    """Each setting's variable and flag appears in the README's settings table."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert f"`{setting.env}`" in readme, setting.env
        if setting.flag:
            assert f"`{setting.flag}`" in readme, setting.flag


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
        load("report", {"OCHINAI_STORE": url})
    assert f"OCHINAI_STORE={url!r}" in str(caught.value)
    assert "s3://BUCKET[/PREFIX]" in str(caught.value)
