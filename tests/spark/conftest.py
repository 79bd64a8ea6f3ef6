"""Spark fixtures: one local SparkSession for the whole test session (starting Spark costs
~10 s), and a real standalone cluster on 127.0.0.1 for the one test that needs it."""

from __future__ import annotations

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("pyarrow")


def _need_java() -> None:
    from distkeras.spark.errors import SparkUnavailableError
    from distkeras.spark.session import check_java

    try:
        check_java()
    except SparkUnavailableError as exc:
        pytest.skip(str(exc).splitlines()[0])


@pytest.fixture(scope="session")
def spark():
    """local[2,2]: two task slots, and two attempts per task (so retries can be tested)."""
    _need_java()
    from distkeras.spark.session import active_session, get_or_create_session

    assert active_session() is None, "another SparkSession already runs in the test process"
    session = get_or_create_session("local[2,2]", app_name="distkeras-tests")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def standalone_cluster():
    _need_java()
    from distkeras.spark.testing import LocalStandaloneCluster

    with LocalStandaloneCluster(cores=2, memory="1g") as cluster:
        yield cluster
