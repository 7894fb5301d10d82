"""Tests of the mapping from third-party failures to our error classes and exit codes."""

from __future__ import annotations

import pytest
import requests
from botocore import exceptions as bx

from ochinai.runtime.errors import (
    EX_CONFIG,
    EX_NOPERM,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    ConfigError,
    DataError,
    PermanentError,
    RuleError,
    TransientError,
    UsageError,
    classify_boto,
    classify_requests,
    exit_code_for,
    http_status_error,
)


def client_error(code: str, status: int) -> bx.ClientError:
    return bx.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def test_exit_codes_follow_the_table_of_exit_codes() -> None:
    """Each class ends a run with the code docs/architecture.md "Exit codes" gives it."""
    assert [
        exit_code_for(e)
        for e in (
            UsageError("u"),
            DataError("d"),
            RuleError("r"),
            TransientError("t"),
            PermanentError("p"),
            ConfigError("c"),
            KeyError("k"),
        )
    ] == [64, 65, 66, 75, 77, 78, 70]


@pytest.mark.parametrize(
    ("error", "cls", "code"),
    [
        (client_error("SlowDown", 503), TransientError, EX_TEMPFAIL),
        (client_error("InternalError", 500), TransientError, EX_TEMPFAIL),
        (client_error("ConditionalRequestConflict", 409), TransientError, EX_TEMPFAIL),
        (client_error("AccessDenied", 403), PermanentError, EX_NOPERM),
        (client_error("InvalidAccessKeyId", 403), PermanentError, EX_NOPERM),
        (client_error("SignatureDoesNotMatch", 403), PermanentError, EX_NOPERM),
        (client_error("NoSuchBucket", 404), PermanentError, EX_NOPERM),
        (
            bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
            TransientError,
            EX_TEMPFAIL,
        ),
        (bx.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), TransientError, EX_TEMPFAIL),
        (bx.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), TransientError, EX_TEMPFAIL),
        (bx.NoCredentialsError(), ConfigError, EX_CONFIG),
        (client_error("WeirdThing", 400), Exception, EX_SOFTWARE),
    ],
)
def test_boto_failures_are_classified(error: Exception, cls: type, code: int) -> None:
    """botocore errors map to transient (75), permanent (77), config (78) or unexpected (70)."""
    mapped = classify_boto(error, "s3://bucket/in/sales.csv")
    assert isinstance(mapped, cls)
    assert mapped.exit_code == code
    assert "s3://bucket/in/sales.csv" in str(mapped)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (500, TransientError),
        (503, TransientError),
        (429, TransientError),
        (409, TransientError),
        (401, PermanentError),
        (403, PermanentError),
        (404, PermanentError),
    ],
)
def test_http_statuses_are_classified(status: int, cls: type) -> None:
    """5xx, 429 and 409 are transient; 401, 403 and other 4xx permanent; the URL is named."""
    mapped = http_status_error(status, "https://api.example/items")
    assert type(mapped) is cls and "https://api.example/items" in str(mapped)


def test_requests_failures_are_classified() -> None:
    """Timeouts and refused connections are transient; an HTTP 403 is permanent."""
    url = "https://api.example/items"
    assert isinstance(classify_requests(requests.Timeout(), url), TransientError)
    assert isinstance(classify_requests(requests.ConnectionError(), url), TransientError)
    response = requests.Response()
    response.status_code = 403
    mapped = classify_requests(requests.HTTPError(response=response), url)
    assert isinstance(mapped, PermanentError) and url in str(mapped)
