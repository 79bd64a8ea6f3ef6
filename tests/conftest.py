"""Fixtures shared by every test folder: one local SparkSession for the whole test run
(starting Spark costs ~10 s, and Spark allows one SparkContext per process)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    """local[2,2]: two task slots, and two attempts per task (so retries can be tested)."""
    pytest.importorskip("pyspark")
    pytest.importorskip("pyarrow")
    from distkeras.spark.errors import SparkUnavailableError
    from distkeras.spark.session import active_session, check_java, get_or_create_session

    try:
        check_java()
    except SparkUnavailableError as exc:
        pytest.skip(str(exc).splitlines()[0])
    assert active_session() is None, "another SparkSession already runs in the test process"
    session = get_or_create_session("local[2,2]", app_name="distkeras-tests")
    yield session
    session.stop()
