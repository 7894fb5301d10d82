"""The report job: sales CSV in S3 -> daily sales per store -> Excel workbook in S3 -> notice.
Its spec imports only the settings; pyarrow and xlsxwriter load when the job runs."""

from ochinai.jobs.report.settings import ReportSettings
from ochinai.runtime.job import Action, Job, deferred
from ochinai.runtime.memory import lean_memory

JOB = Job(
    name="report",
    help="sales CSV -> daily sales and qty per store -> Excel workbook, mailed or linked",
    settings=ReportSettings,
    actions={
        "run": Action(
            deferred("ochinai.jobs.report.job:run", lean_memory),
            "build, store and announce the business date's report",
        )
    },
    notices=("report",),
)
