"""The monitor job: price and stock watch over an HTTP API or product pages, exact about
what changed. The spec imports only the settings; the job's modules load when it runs."""

from ochinai.jobs.monitor.settings import MonitorSettings
from ochinai.runtime.job import Action, Job, deferred

JOB = Job(
    name="monitor",
    help="price/stock API -> changes against the last state -> history and notices",
    settings=MonitorSettings,
    actions={
        "run": Action(
            deferred("ochinai.jobs.monitor.job:run"),
            "fetch, diff, commit the state and announce real changes",
        )
    },
    notices=("changes",),
)
