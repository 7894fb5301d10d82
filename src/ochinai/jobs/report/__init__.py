"""The report job: sales CSV in S3 -> daily sales per store -> Excel workbook in S3 -> notice.

The spec imports only the settings: pyarrow and xlsxwriter load when the job runs, not
for ``--help`` or ``ochinai status``.
"""

from ochinai.jobs.report.settings import ReportSettings
from ochinai.runtime.job import Action, Context, Job, Summary


def run(ctx: Context[ReportSettings]) -> Summary:
    """Build, store and announce the business date's report (``job.run``)."""
    from ochinai.jobs.report import job

    return job.run(ctx)


JOB = Job(
    name="report",
    help="sales CSV -> daily sales and qty per store -> Excel workbook, mailed or linked",
    settings=ReportSettings,
    actions={"run": Action(run, "build, store and announce the business date's report")},
    notices=("report",),
)
