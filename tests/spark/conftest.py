"""Spark fixtures: a real standalone cluster on 127.0.0.1 for the one test that needs it. The
local SparkSession fixture ``spark`` (one for the whole run) lives in tests/conftest.py, shared
with tests/frontends."""

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


@pytest.fixture(scope="module")
def standalone_cluster():
    _need_java()
    from distkeras.spark.testing import LocalStandaloneCluster

    with LocalStandaloneCluster(cores=2, memory="1g") as cluster:
        yield cluster
