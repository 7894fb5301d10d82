"""ochinai: one-shot batch jobs for Kubernetes CronJobs on S3-compatible storage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ochinai")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
