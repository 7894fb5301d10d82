"""The report's and the backup's actions run with memory given back as it is freed."""

from __future__ import annotations

import pyarrow as pa

from ochinai.jobs.backup import JOB as BACKUP
from ochinai.jobs.report import JOB as REPORT
from ochinai.runtime.memory import lean_memory


def test_arrow_uses_the_system_allocator_for_the_duration_then_as_it_was() -> None:
    before = pa.default_memory_pool().backend_name
    with lean_memory():
        assert pa.default_memory_pool().backend_name == "system"
        buffer = pa.allocate_buffer(1 << 20)  # freed after the pool changed back: safe
    assert pa.default_memory_pool().backend_name == before
    del buffer


def test_the_data_moving_actions_run_lean_and_the_monitor_does_not() -> None:
    """The report and the backup's Parquet actions; the monitor (small Python objects,
    no Arrow) was slower with a fixed mmap threshold."""
    from ochinai.jobs.monitor import JOB as MONITOR

    lean = {
        f"{job.name} {name}"
        for job in (REPORT, BACKUP, MONITOR)
        for name, action in job.actions.items()
        if getattr(action.fn, "around", None) is lean_memory
    }
    assert lean == {"report run", "backup run", "backup verify", "backup restore", "backup drill"}


def test_a_commands_process_converts_values_without_importing_pandas() -> None:
    """pyarrow, told that pandas is missing, converts Python values as before, and the
    35 MB of pandas stay out of the report's and the backup's processes."""
    import subprocess
    import sys

    code = (
        "import sys; from ochinai import entry; sys.meta_path.insert(0, entry._WithoutPandas())\n"
        "import pyarrow as pa, pyarrow.compute as pc\n"
        "print(pc.add(pa.array([1, 2]), 5).to_pylist(), pa.scalar(5).as_py(),"
        " pa.array(['a']).to_pylist(), 'pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[6,", "7]", "5", "['a']", "False"]
