"""Error classes of every job and the exit codes they end a run with: docs/architecture.md
"Exit codes"."""

from __future__ import annotations

import socket
from typing import Any

# Exit codes follow sysexits(3) so that a CronJob's podFailurePolicy can tell a
# bad input (never retried) from a flaky network (retried).
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_RULE = 66
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class OchinaiError(Exception):
    """Base of every error a job may raise; anything else is unexpected (70)."""

    exit_code = EX_SOFTWARE
    outcome = "unexpected_error"


class UsageError(OchinaiError):
    """The command line is wrong."""

    exit_code = EX_USAGE
    outcome = "usage_error"


class DataError(OchinaiError):
    """Input is missing, unreadable or invalid."""

    exit_code = EX_DATAERR
    outcome = "data_error"


class RuleError(OchinaiError):
    """Input parses but breaks a business rule."""

    exit_code = EX_RULE
    outcome = "rule_error"


class ConfigError(OchinaiError):
    """A setting is missing, malformed or contradicts another one."""

    exit_code = EX_CONFIG
    outcome = "config_error"


class ExternalError(OchinaiError):
    """A service outside the job failed; subclasses say whether a retry may help."""

    exit_code = EX_TEMPFAIL
    outcome = "transient_error"


class TransientError(ExternalError):
    """Network, timeout, 5xx, 429, 409: the next attempt may succeed."""

    exit_code = EX_TEMPFAIL
    outcome = "transient_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ExternalError):
    """401/403, no such bucket: retrying without a human changes nothing."""

    exit_code = EX_NOPERM
    outcome = "permanent_error"


class EndpointUnreachable(ExternalError):
    """The S3 endpoint never answered this process: connection refused, no such host, or
    no connection in time, after the client's own tries.

    75, as a server that is down may be up for the Job's next try; but not a
    TransientError, which the run's loops (the lock's acquire, RetryPolicy) would try
    again for tens of seconds: a wrong address fails in seconds, said once. An endpoint
    that answered earlier in the process and then fails is a TransientError, retried.
    """

    exit_code = EX_TEMPFAIL
    outcome = "transient_error"

    def __init__(self, message: str, *, endpoint: str, why: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.why = why or message  # the message without the request it was said of


class LockLost(TransientError):
    """The lock was not renewed in time, so this run must not write any more."""


def exit_code_for(exc: BaseException) -> int:
    """Return the exit code a run ends with when ``exc`` escapes the job."""
    if isinstance(exc, OchinaiError):
        return exc.exit_code
    return EX_SOFTWARE


def outcome_for(exc: BaseException) -> str:
    """Return the run outcome recorded for ``exc``."""
    if isinstance(exc, OchinaiError):
        return exc.outcome
    return OchinaiError.outcome


# --- botocore ---------------------------------------------------------------

# Error codes as S3 and S3-compatible servers send them. Anything not listed is
# judged by its HTTP status.
_S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ConditionalRequestConflict",
        "OperationAborted",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
_S3_PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
        "AccountProblem",
        "InvalidBucketName",
        "ExpiredToken",
        "InvalidToken",
        "PermanentRedirect",
    }
)


def s3_error_code(exc: BaseException) -> tuple[str, int]:
    """Return (error code, HTTP status) of a botocore ClientError, or ("", 0)."""
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if not status and code.isdigit():
        status = int(code)
    return code, status


def classify_boto(exc: BaseException, what: str) -> OchinaiError:
    """Turn a botocore failure into one of our classes; ``what`` names the object (s3://b/k)."""
    from botocore import exceptions as bx

    if isinstance(exc, OchinaiError):
        return exc
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return ConfigError(
            f"{what}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, bx.ParamValidationError):
        return ConfigError(f"{what}: invalid S3 request: {exc}")
    if isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectTimeoutError
        | bx.ReadTimeoutError
        | bx.ConnectionClosedError
        | bx.ResponseStreamingError,
    ):
        return TransientError(f"{what}: S3 endpoint unreachable or too slow: {exc}")
    if isinstance(exc, bx.ClientError):
        code, status = s3_error_code(exc)
        if code in _S3_PERMANENT_CODES:
            hint = {
                "NoSuchBucket": "the bucket does not exist; create it or fix OCHINAI_STORE",
                "InvalidAccessKeyId": "the access key is unknown to the server",
                "SignatureDoesNotMatch": "the secret key does not match the access key",
                "AccessDenied": "the credentials lack permission for this operation",
            }.get(code, "check the credentials and OCHINAI_STORE")
            return PermanentError(f"{what}: {code} ({status}): {hint}")
        if code in _S3_TRANSIENT_CODES:
            return TransientError(f"{what}: {code} ({status}), will be retried")
        if status in _RETRYABLE_STATUSES or status >= 500 or status in (401, 403):
            return http_status_error(status, f"{what}: {code}" if code else what)
        # Any other 4xx from our own storage means a request we built wrongly: a bug.
        return OchinaiError(f"{what}: unexpected S3 answer {code} ({status}): {exc}")
    if isinstance(exc, bx.BotoCoreError | socket.timeout | ConnectionError):
        return TransientError(f"{what}: {exc}")
    return OchinaiError(f"{what}: {exc!r}")


# --- HTTP, for every client (requests, botocore, the kubernetes client) ------------

# Statuses a later attempt may get past: timeout, conflict, too early, too many requests.
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


def http_status_error(status: int, where: str, retry_after: float | None = None) -> OchinaiError:
    """The one mapping of a failed HTTP status to our classes; ``where`` is already redacted.

    408/409/425/429 and 5xx are transient (75) and keep the server's Retry-After;
    401/403 are permanent (77): credentials missing or not allowed; any other status is
    permanent too: the same request will be refused the same way until a human acts.
    """
    if status in _RETRYABLE_STATUSES or status >= 500:
        return TransientError(f"{where}: HTTP {status}, will be retried", retry_after=retry_after)
    if status in (401, 403):
        return PermanentError(f"{where}: HTTP {status}: credentials missing or not allowed")
    return PermanentError(f"{where}: HTTP {status}")


def classify_requests(exc: BaseException, url: str) -> OchinaiError:
    """Turn a requests failure into one of our classes; ``url`` must already be redacted."""
    import requests

    if isinstance(exc, OchinaiError):
        return exc
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return http_status_error(exc.response.status_code, url)
    if isinstance(exc, requests.TooManyRedirects):
        # The server's answers lead in a circle: what it serves is unreadable until it is
        # fixed, as with an answer that is not JSON.
        return DataError(f"{url}: too many redirects (a redirect loop?); the answer cannot be read")
    if isinstance(exc, requests.Timeout):
        return TransientError(f"{url}: timed out")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return TransientError(f"{url}: the answer was cut off before its end")
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return DataError(f"{url}: the answer's Content-Encoding cannot be decoded")
    if isinstance(exc, requests.ConnectionError):
        return TransientError(f"{url}: connection failed: {type(exc).__name__}")
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return ConfigError(f"{url}: invalid URL")
    if isinstance(exc, requests.exceptions.InvalidHeader):
        # A setting's value, never a bug; and the message would quote it (an API key).
        return ConfigError(
            f"{url}: a request header's value has a line break or white space at its start "
            "(a key copied with its line break?); fix the setting that gives it"
        )
    return OchinaiError(f"{url}: {exc!r}")
