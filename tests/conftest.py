"""Shared by every test folder.

* This process trains with the JAX backend: ``KERAS_BACKEND`` is set here, before anything
  imports Keras (the backend is fixed per process; TensorFlow runs go through subprocesses).
* One local SparkSession for the whole run (starting Spark costs ~10-20 s, and a process holds
  one SparkContext): ``local[4,2]``, four task slots so that 4-worker synchronous (barrier)
  runs fit, and two attempts per task so that task retries can be tested.
* A real standalone master + worker on 127.0.0.1, started once for the tests that need one.
"""

from __future__ import annotations

import os

import pytest

os.environ["KERAS_BACKEND"] = "jax"

SPARK_MASTER = "local[4,2]"
SPARK_SLOTS = 4


def _need_spark() -> None:
    pytest.importorskip("pyspark")
    pytest.importorskip("pyarrow")
    from distkeras.spark.errors import SparkUnavailableError
    from distkeras.spark.session import check_java

    try:
        check_java()
    except SparkUnavailableError as exc:
        pytest.skip(str(exc).splitlines()[0])


@pytest.fixture(scope="session")
def spark():
    _need_spark()
    from distkeras.spark.session import active_session, get_or_create_session

    assert active_session() is None, "another SparkSession already runs in the test process"
    session = get_or_create_session(SPARK_MASTER, app_name="distkeras-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def standalone_cluster():
    _need_spark()
    from distkeras.spark.testing import LocalStandaloneCluster

    with LocalStandaloneCluster(cores=2, memory="1g") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def digits(spark):
    """The bundled digits: (train_df, test_df, numpy Digits), cached DataFrames."""
    from tests.training import digits_frames

    train_df, test_df, data = digits_frames(spark)
    yield train_df, test_df, data
    train_df.unpersist()
    test_df.unpersist()
