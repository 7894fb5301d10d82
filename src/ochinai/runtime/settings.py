"""The runtime's own settings: store, date, logs, S3, lock, notifications, status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from ochinai.runtime.calendar import RelativeDay
from ochinai.runtime.declare import (
    StoreLocation,
    choice,
    parse_bool,
    parse_count,
    parse_date,
    parse_duration,
    parse_http_url,
    parse_list,
    parse_positive_int,
    parse_run_id,
    parse_size,
    parse_store,
    parse_text,
    parse_timezone,
    setting,
)
from ochinai.runtime.routes import check as check_routes
from ochinai.runtime.routes import parse_receivers, parse_routes


@dataclass(frozen=True)
class CommonSettings:
    """What every command reads, jobs and ``status`` alike (status sends notices too)."""

    store: StoreLocation = setting(
        "OCHINAI_STORE",
        parse_store,
        None,
        "bucket and key prefix for every object the jobs read and write",
        required=True,
    )
    log_level: str = setting(
        "OCHINAI_LOG_LEVEL",
        choice("debug", "info", "warning", "error"),
        "info",
        "lowest severity logged by ochinai itself (libraries log WARNING and up)",
    )
    log_format: str = setting(
        "OCHINAI_LOG_FORMAT",
        choice("auto", "json", "text"),
        "auto",
        "json lines, or text for people; auto picks text on a terminal",
    )
    s3_timeout: float = setting(
        "OCHINAI_S3_TIMEOUT", parse_duration, "60s", "read timeout of one S3 request"
    )
    link_endpoint_url: str | None = setting(
        "OCHINAI_LINK_ENDPOINT_URL",
        parse_http_url,
        None,
        "the S3 address the readers of links reach (the bucket's public or VPN address): links "
        "to stored files are signed for it (default: the endpoint the jobs use, which a "
        "WARNING names when it is loopback or cluster-internal)",
    )
    webhook_url: str | None = setting(
        "OCHINAI_WEBHOOK_URL", parse_text, None, "Slack-compatible webhook", secret=True
    )
    smtp_host: str | None = setting(
        "OCHINAI_SMTP_HOST", parse_text, None, "SMTP server; unset means no mail"
    )
    smtp_port: int | None = setting(
        "OCHINAI_SMTP_PORT",
        parse_positive_int,
        None,
        "SMTP port (default: 587 for starttls, 465 for ssl, 25 for none)",
    )
    smtp_tls: str = setting(
        "OCHINAI_SMTP_TLS",
        choice("starttls", "ssl", "none"),
        "starttls",
        "SMTP transport security",
    )
    smtp_user: str | None = setting(
        "OCHINAI_SMTP_USER", parse_text, None, "SMTP login; unset means no AUTH"
    )
    smtp_password: str | None = setting(
        "OCHINAI_SMTP_PASSWORD", parse_text, None, "SMTP password", secret=True
    )
    mail_from: str | None = setting("OCHINAI_MAIL_FROM", parse_text, None, "sender address")
    mail_to: list[str] | None = setting("OCHINAI_MAIL_TO", parse_list, None, "mail recipients")
    receivers: dict[str, str] = setting(
        "OCHINAI_RECEIVER_<NAME>",
        parse_receivers,
        "",
        "a receiver of notices named <name>: URLs, space-separated (mailto:a@example.com,"
        "b@example.com through OCHINAI_SMTP_HOST; https:// a Slack-compatible webhook; "
        "workflows://, discord://, ntfy://, gchat://... through Apprise); "
        "OCHINAI_RECEIVER_DEFAULT replaces OCHINAI_WEBHOOK_URL and OCHINAI_MAIL_TO",
        secret=True,
    )
    routes: dict[str, list[str]] = setting(
        "OCHINAI_ROUTES",
        parse_routes,
        "",
        "which receivers get each kind of notice (report, changes, failure, reminder, "
        "recovery, stale, drill), e.g. report:sales,failure:ops; a kind without a route goes "
        "to the default receiver (OCHINAI_WEBHOOK_URL, OCHINAI_MAIL_TO), one routed to none "
        "nowhere",
    )
    notify_timeout: float = setting(
        "OCHINAI_NOTIFY_TIMEOUT",
        parse_duration,
        "30s",
        "timeout of one webhook call or SMTP session",
    )
    remind_after: float = setting(
        "OCHINAI_REMIND_AFTER",
        parse_duration,
        "24h",
        "while an incident stays open, a reminder once its last notice is this old; 0: never",
    )

    def __post_init__(self) -> None:
        check_routes(self)  # a typo in a route or a receiver: 78 before any work


@dataclass(frozen=True)
class RuntimeSettings(CommonSettings):
    """What the runtime reads for every job run, beside the job's own settings."""

    date: date | RelativeDay | None = setting(
        "OCHINAI_DATE",
        parse_date,
        None,
        "business date (default: the day the job's own settings say, else today); a relative "
        "one is resolved in --timezone when the run starts, -Nd being N days before",
    )
    timezone: ZoneInfo = setting(
        "OCHINAI_TIMEZONE", parse_timezone, "Asia/Tokyo", "the schedule's time zone"
    )
    dry_run: bool = setting(
        "OCHINAI_DRY_RUN",
        parse_bool,
        "false",
        "read and compute, but write, delete and send nothing",
    )
    run_id: str | None = setting(
        "OCHINAI_RUN_ID",
        parse_run_id,
        None,
        "id of this run in logs and records (default: a new sortable id)",
    )
    pod_name: str | None = setting(
        "OCHINAI_POD_NAME", parse_text, None, "pod name (default: $HOSTNAME)"
    )
    job_name: str | None = setting(
        "OCHINAI_JOB_NAME", parse_text, None, "Kubernetes Job name, for the logs"
    )
    completion_index: int | None = setting(
        "JOB_COMPLETION_INDEX",
        parse_count,
        None,
        "this pod's index in an Indexed Job (Kubernetes sets it); each index has its own lock",
        flag="completion-index",
    )
    stop_grace: float = setting(
        "OCHINAI_STOP_GRACE",
        parse_duration,
        "20s",
        "after SIGTERM, how long the work may go on to its next check before it is "
        "interrupted where it is; keep it below OCHINAI_TERMINATION_GRACE",
    )
    termination_grace: float = setting(
        "OCHINAI_TERMINATION_GRACE",
        parse_duration,
        "30s",
        "the pod's terminationGracePeriodSeconds: after SIGTERM, the lock's release, the "
        "run record and the summary line are given up so as to end a second before it",
    )
    max_run_time: float = setting(
        "OCHINAI_MAX_RUN_TIME",
        parse_duration,
        "3h",
        "the Job's activeDeadlineSeconds: no run lives longer, so multipart uploads older "
        "than this are a dead run's and are aborted",
    )
    multipart_threshold: int = setting(
        "OCHINAI_MULTIPART_THRESHOLD",
        parse_size,
        "64MiB",
        "bodies larger than this are uploaded in parts",
    )
    lock: str = setting(
        "OCHINAI_LOCK",
        choice("auto", "lease", "s3", "none"),
        "auto",
        "lock against a second run: a Kubernetes Lease, an S3 object, or none; "
        "auto is lease in a cluster, s3 elsewhere",
    )
    lock_wait: float = setting(
        "OCHINAI_LOCK_WAIT",
        parse_duration,
        "0",
        "how long to wait for a live holder to finish before ending skipped_locked",
    )
    lock_duration: float = setting("OCHINAI_LOCK_DURATION", parse_duration, "60s", "lease duration")
    lock_renew_period: float = setting(
        "OCHINAI_LOCK_RENEW_PERIOD", parse_duration, "20s", "how often the holder renews"
    )
    lock_renew_deadline: float = setting(
        "OCHINAI_LOCK_RENEW_DEADLINE",
        parse_duration,
        "45s",
        "after this long without a renewal the run stops writing",
    )
    namespace: str | None = setting(
        "OCHINAI_NAMESPACE",
        parse_text,
        None,
        "namespace of the Lease (default: the pod's, else the kubeconfig's)",
    )
    alert_after: int = setting(
        "OCHINAI_ALERT_AFTER",
        parse_positive_int,
        "1",
        "failed runs in a row before an incident opens and is announced",
    )
    ping_url: str | None = setting(
        "OCHINAI_PING_URL",
        parse_text,
        None,
        "check-in URL of an outside dead-man's switch (Healthchecks protocol), per CronJob",
        secret=True,
    )
    pushgateway_url: str | None = setting(
        "OCHINAI_PUSHGATEWAY_URL",
        parse_text,
        None,
        "Prometheus Pushgateway each run pushes its metrics to, such as "
        "http://pushgateway.monitoring:9091",
    )


def parse_max_ages(value: str) -> dict[str, float]:
    """JOB=DURATION pairs, comma-separated, such as monitor=1h,backup=26h"""
    ages: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        job, sep, duration = item.partition("=")
        if not sep or not job.strip():
            raise ValueError(f"{item!r} is not JOB=DURATION")
        ages[job.strip()] = parse_duration(duration)
    return ages


@dataclass(frozen=True)
class StatusSettings(CommonSettings):
    """What ``ochinai status`` reads."""

    max_age: float = setting(
        "OCHINAI_STATUS_MAX_AGE",
        parse_duration,
        "26h",
        "a job whose last success is older than this is stale",
    )
    max_ages: dict[str, float] = setting(
        "OCHINAI_STATUS_MAX_AGES",
        parse_max_ages,
        "",
        "per job, JOB=DURATION comma-separated, such as monitor=1h (others: --max-age)",
    )
