"""ochinai: one-shot batch jobs for Kubernetes CronJobs on S3-compatible storage."""

# The one place the version is written: pyproject.toml reads it from here, and a run
# does not pay for importlib.metadata (60 ms) to learn it.
__version__ = "0.2.0"
