from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="checks executor JVMs through /proc")
def test_run_workers_on_standalone_cluster(standalone_cluster):
    """run_workers against a real standalone master + worker on 127.0.0.1: the workers run in
    executor JVMs launched by the standalone worker, not in the driver's JVM."""
    assert standalone_cluster.status()["workers"][0]["cores"] == 2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_standalone_job.py")), standalone_cluster.master_url],
        env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for run in ("plain", "barrier"):
        summaries = out[run]
        assert [s["worker"] for s in summaries] == [0, 1]
        assert sum(s["rows"] for s in summaries) == 500
        for s in summaries:
            assert s["pid"] != out["driver_pid"]
            assert s["jvm"] is not None and s["jvm"] != out["driver_jvm"]  # an executor JVM
            assert s["cwd"].startswith(standalone_cluster.work_dir)  # the worker's app folder
