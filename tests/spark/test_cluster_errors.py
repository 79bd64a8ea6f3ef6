"""Runs that fail for the cluster's environment get one clear error each, from real Spark jobs:
an executor Python that lacks modules, an executor interpreter that does not exist, and data
that only the driver can read. (One driver process runs all three, a SparkSession each.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import run_json_script

pytestmark = pytest.mark.slow

BARE_PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # the system's Python: no numpy, no distkeras


@pytest.fixture(scope="module")
def failures():
    modes = ["python:/nonexistent/bin/python", "driver-only-data"] + ([f"python:{BARE_PYTHON}"] if BARE_PYTHON else [])
    return run_json_script(Path(__file__).with_name("_bad_executor_python.py"), *modes, timeout=900)


def test_an_executor_python_that_does_not_exist_is_named(failures):
    got = failures["python:/nonexistent/bin/python"]
    assert got["type"] == "ExecutorEnvironmentError", got
    assert "the executors' Python (/nonexistent/bin/python)" in got["message"]
    assert "cannot be started: No such file or directory" in got["message"]
    assert "PYSPARK_PYTHON" in got["message"]  # says how to fix it


def test_an_executor_python_without_the_packages_names_the_missing_module(failures):
    if BARE_PYTHON is None:
        pytest.skip("no system python3 in /usr/bin or /bin to play the bare executor Python")
    got = failures[f"python:{BARE_PYTHON}"]
    assert got["type"] == "ExecutorEnvironmentError", got
    assert f"the executors' Python ({BARE_PYTHON})" in got["message"]
    assert "cannot import" in got["message"] and "No module named" in got["message"]


def test_data_only_the_driver_can_read_names_the_path(failures):
    got = failures["driver-only-data"]
    assert got["type"] == "DataPathError" and "FileNotFoundError" in got["classes"], got
    assert "the executors cannot read file:" in got["message"] and "train.parquet" in got["message"]
    assert "readable from every host" in got["message"]


def test_a_driver_side_error_is_left_alone():
    """Only failed Spark jobs are translated: the driver's own ImportError stays what it is."""
    from distkeras.spark.diagnose import explain

    assert explain(ModuleNotFoundError("No module named 'x'"), spark=None) is None
