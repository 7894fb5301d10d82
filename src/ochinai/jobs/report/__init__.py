"""The report job: sales CSV in S3 -> daily sales per store -> Excel workbook in S3 -> notice."""

from ochinai.jobs.report.job import run
from ochinai.jobs.report.settings import ReportSettings
from ochinai.runtime.job import Action, Job

JOB = Job(
    name="report",
    help="sales CSV -> daily sales and qty per store -> Excel workbook, mailed or linked",
    settings=ReportSettings,
    actions={"run": Action(run, "build, store and announce the business date's report")},
)
