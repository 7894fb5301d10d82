"""The monitor job: price and stock watch over an HTTP API, exact about what changed.

The spec imports only the settings; the job's modules load when it runs.
"""

from ochinai.jobs.monitor.settings import MonitorSettings
from ochinai.runtime.job import Action, Context, Job, Summary


def run(ctx: Context[MonitorSettings]) -> Summary:
    """Watch the API once (``job.run``)."""
    from ochinai.jobs.monitor import job

    return job.run(ctx)


JOB = Job(
    name="monitor",
    help="price/stock API -> changes against the last state -> history and notices",
    settings=MonitorSettings,
    actions={"run": Action(run, "fetch, diff, commit the state and announce real changes")},
    notices=("changes",),
)
