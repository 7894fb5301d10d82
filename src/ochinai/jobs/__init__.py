"""The registry: the one place that lists the jobs. Adding a job is one line here."""

from ochinai.jobs import backup, monitor, report
from ochinai.runtime.job import Job

JOBS: dict[str, Job] = {job.name: job for job in (report.JOB, monitor.JOB, backup.JOB)}
