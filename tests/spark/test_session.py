from __future__ import annotations

import os
import sys

import pytest

from distkeras.core.cache_dirs import switched_on
from distkeras.spark import session as S
from distkeras.spark.errors import SparkUnavailableError

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "text, major",
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("openjdk 11.0.2 2019-01-15", 11),
        ("garbage", None),
    ],
)
def test_parse_java_version(text, major):
    assert S.parse_java_version(text) == major


@pytest.fixture
def no_java_cache(monkeypatch):
    monkeypatch.setattr(S, "_java_ok", None)


def test_check_java_missing(monkeypatch, tmp_path, no_java_cache):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SparkUnavailableError, match=r"Java 17\+.*no `java` was found") as info:
        S.check_java()
    assert "apt-get install openjdk-17" in str(info.value)


def test_check_java_too_old(monkeypatch, tmp_path, no_java_cache):
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'java version "1.8.0_392"\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(SparkUnavailableError, match=r"needs Java 17\+, but .* is Java 8"):
        S.check_java()


def test_local_threads():
    assert S._local_threads("local") == 1
    assert S._local_threads("local[3]") == 3
    assert S._local_threads("local[2,4]") == 2
    assert S._local_threads("local[*]") == (os.cpu_count() or 1)
    assert S._local_threads("local-cluster[2,3,1024]") == 6
    assert S._local_threads("spark://127.0.0.1:7077") is None


def test_default_conf(monkeypatch):
    """The parts of the settings that depend on the environment and the master (the fixed ones
    are checked by their effect on the live session below, and by the fast too-few-slots
    errors in test_runner / test_tasks)."""
    monkeypatch.setenv("PYTHONPATH", "relative/dir")
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    conf = S.default_conf("local[2]", backend="jax")
    assert conf["spark.pyspark.python"] == conf["spark.executorEnv.PYSPARK_PYTHON"] == sys.executable
    assert conf["spark.executorEnv.KERAS_BACKEND"] == "jax"
    assert "spark.executorEnv.KERAS_BACKEND" not in S.default_conf("local[2]")  # nothing to pass on
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert S.default_conf("local[2]")["spark.executorEnv.KERAS_BACKEND"] == "tensorflow"
    monkeypatch.setenv("PYSPARK_PYTHON", "/opt/py/bin/python3")
    assert S.default_conf("local[2]")["spark.pyspark.python"] == "/opt/py/bin/python3"
    # Executors run elsewhere (another working directory): their PYTHONPATH must be absolute.
    entries = conf["spark.executorEnv.PYTHONPATH"].split(os.pathsep)
    assert os.path.abspath("relative/dir") in entries and all(os.path.isabs(e) for e in entries)
    # loopback addresses only where the whole cluster is this machine
    for master, loopback in [("local[2]", True), ("local-cluster[2,1,1024]", True), ("spark://127.0.0.1:7077", True),
                             ("spark://localhost:7077", True), ("spark://10.1.2.3:7077", False), ("yarn", False)]:
        assert (S.default_conf(master).get("spark.driver.host") == "127.0.0.1") is loopback, master
    assert S.default_conf("local[3]")["spark.sql.shuffle.partitions"] == "6"


def test_local_driver_jit_options(monkeypatch):
    monkeypatch.delenv(S.ENV_SPARK_JIT, raising=False)
    assert S.default_conf("local[2]")["spark.driver.extraJavaOptions"] == S.LOCAL_DRIVER_JIT_OPTIONS
    assert "spark.driver.extraJavaOptions" not in S.default_conf("spark://10.1.2.3:7077")  # a cluster's driver: Java's own
    for off in ("0", "off", "false"):
        monkeypatch.setenv(S.ENV_SPARK_JIT, off)
        assert "spark.driver.extraJavaOptions" not in S.default_conf("local[2]")


def test_no_jit_options_over_the_users_own_java_options(monkeypatch, tmp_path):
    # options in the session's conf would replace those of spark-defaults.conf or PYSPARK_SUBMIT_ARGS
    monkeypatch.delenv(S.ENV_SPARK_JIT, raising=False)
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--driver-java-options -Xss4m pyspark-shell")
    assert "spark.driver.extraJavaOptions" not in S.default_conf("local[2]")
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    (tmp_path / "spark-defaults.conf").write_text("spark.driver.extraJavaOptions -Xss4m\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert "spark.driver.extraJavaOptions" not in S.default_conf("local[2]")
    (tmp_path / "spark-defaults.conf").write_text("# spark.driver.extraJavaOptions -Xss4m\nspark.executor.memory 2g\n")
    assert S.default_conf("local[2]")["spark.driver.extraJavaOptions"] == S.LOCAL_DRIVER_JIT_OPTIONS


def test_the_live_driver_jvm_runs_with_the_jit_options(spark):
    if not S.is_local_master(spark.sparkContext.master) or not switched_on(S.ENV_SPARK_JIT):
        pytest.skip("the options are for local sessions, when not turned off")
    args = list(spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    for flag in S.LOCAL_DRIVER_JIT_OPTIONS.split():
        assert flag in args, (flag, args)


def _executor_facts(_):
    import distkeras

    return [(sys.executable, os.environ.get("KERAS_BACKEND"), os.path.dirname(os.path.dirname(distkeras.__file__)))]


def test_session_reused_and_configured(spark):
    # No master: the running session is used as is, never replaced.
    assert S.get_or_create_session() is spark
    assert S.get_or_create_session("local[4,2]") is spark
    assert S.started_here(spark)
    assert S.task_slots(spark) == 4
    with pytest.raises(ValueError, match="already runs in this process"):
        S.get_or_create_session("local[1]")
    # what the settings are for: executors run this interpreter, with this backend, importing
    # this checkout's distkeras; no web UI is started
    facts = spark.sparkContext.parallelize(range(4), 4).mapPartitions(_executor_facts).collect()
    import distkeras

    here = os.path.dirname(os.path.dirname(distkeras.__file__))
    assert set(facts) == {(sys.executable, os.environ["KERAS_BACKEND"], here)}
    assert spark.sparkContext.uiWebUrl is None
    assert spark.sparkContext.getConf().get("spark.driver.host") == "127.0.0.1"


def test_ps_endpoint_of_a_local_session_is_loopback(spark, monkeypatch):
    monkeypatch.delenv("DISTKERAS_PS_HOST", raising=False)
    assert S.ps_endpoint(spark) == ("127.0.0.1", "127.0.0.1")
    monkeypatch.setenv("DISTKERAS_PS_HOST", "localhost")
    assert S.ps_endpoint(spark) == ("127.0.0.1", "localhost")


def test_ps_endpoint_of_a_cluster_is_the_driver_host(monkeypatch, recwarn):
    monkeypatch.delenv("DISTKERAS_PS_HOST", raising=False)
    # an address of another machine (a NAT address, or a host this sandbox does not have): listen everywhere
    endpoint = S.choose_ps_endpoint("spark://head:7077", "198.51.100.7")
    assert endpoint == ("0.0.0.0", "198.51.100.7")
    assert not recwarn.list
    assert S.choose_ps_endpoint("spark://head:7077", "198.51.100.7", ps_host="localhost", ps_bind="127.0.0.1") == ("127.0.0.1", "localhost")
    assert "cannot reach it" in str(recwarn.pop(UserWarning).message)  # loopback advertised to a real cluster


def test_ps_endpoint_of_a_loopback_cluster_does_not_warn(recwarn, monkeypatch):
    monkeypatch.delenv("DISTKERAS_PS_HOST", raising=False)
    assert S.choose_ps_endpoint("spark://127.0.0.1:7077", "127.0.0.1") == ("127.0.0.1", "127.0.0.1")
    assert S.choose_ps_endpoint("local[2]", None) == ("127.0.0.1", "127.0.0.1")
    assert not recwarn.list


def test_driver_host_is_what_spark_advertises(spark):
    assert S.driver_host(spark) == spark.sparkContext.getConf().get("spark.driver.host")
