from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_json_script

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="checks executor JVMs through /proc")
def test_run_workers_on_standalone_cluster(standalone_cluster):
    """run_workers against a real standalone master + worker on 127.0.0.1: the workers run in
    executor JVMs launched by the standalone worker, not in the driver's JVM."""
    assert standalone_cluster.status()["workers"][0]["cores"] == 2
    out = run_json_script(Path(__file__).with_name("_standalone_job.py"), standalone_cluster.master_url, timeout=300)
    for run in ("plain", "barrier"):
        summaries = out[run]
        assert [s["worker"] for s in summaries] == [0, 1]
        assert sum(s["rows"] for s in summaries) == 500
        for s in summaries:
            assert s["pid"] != out["driver_pid"]
            assert s["jvm"] is not None and s["jvm"] != out["driver_jvm"]  # an executor JVM
            assert s["cwd"].startswith(standalone_cluster.work_dir)  # the worker's app folder
