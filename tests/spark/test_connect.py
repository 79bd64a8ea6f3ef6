"""distkeras under Spark Connect (``SparkSession.builder.remote("local[2]")``).

The end-to-end run needs a process of its own: ``remote("local[*]")`` starts the Connect server
inside the calling process, where a classic SparkSession (the shared ``spark`` fixture) must not
run. ``_connect_job.py`` trains ADAG and LocalSGD on the digits through Connect, checks
``predict``/``evaluate`` against a NumPy forward pass and ``model.evaluate``, fits, transforms,
saves and reloads a KerasEstimator, and makes a worker fail; one Connect server for all of it.
``SPARK_TESTING=1`` gives that server a free port (pyspark's own switch) instead of 15002.

The rules of :mod:`distkeras.spark.compat` for where the parameter server can be reached are
tested here without a server, on stand-ins of the Connect session class.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distkeras.spark import compat
from tests.support import child_env, run_json_script


class _Client:
    def __init__(self, host):
        self.host = host


def _connect_session(host: str, conf: dict | None = None):
    """A stand-in of a Connect SparkSession (the class lives in ``pyspark.sql.connect``)."""
    conf = dict(conf or {})
    runtime = type("RuntimeConf", (), {"get": lambda self, key, default=None: conf.get(key, default)})
    cls = type("SparkSession", (), {"__module__": "pyspark.sql.connect.session"})
    spark = cls()
    spark.client = _Client(host)
    spark.conf = runtime()
    return spark


def test_connect_rules_without_a_server(monkeypatch):
    from distkeras.ps.endpoint import ENV_PS_HOST
    from distkeras.spark.session import ps_endpoint, task_slots

    monkeypatch.delenv(ENV_PS_HOST, raising=False)
    local = _connect_session("localhost", {"spark.master": "local[3]", "spark.task.cpus": "1"})
    assert compat.is_connect(local) and compat.server_is_local(local)
    assert compat.master(local) == "local[3]" and task_slots(local) == 3
    assert ps_endpoint(local).advertise == "127.0.0.1"  # a local server: local executors, loopback
    assert compat.app_id(local) is None and compat.conf_get(local, "spark.unset") is None

    remote = _connect_session("spark.example.org", {"spark.master": "spark://10.1.2.3:7077", "spark.driver.host": "10.1.2.3"})
    assert not compat.server_is_local(remote) and task_slots(remote) is None  # the client cannot count a cluster's slots
    with pytest.raises(compat.ConnectPsHostError, match=r"server on 'spark.example.org'.*Set ps_host=.*DISTKERAS_PS_HOST"):
        ps_endpoint(remote)  # never the server's driver host: the parameter server runs here
    assert ps_endpoint(remote, "192.0.2.7").advertise == "192.0.2.7"
    monkeypatch.setenv(ENV_PS_HOST, "192.0.2.8")
    assert ps_endpoint(remote).advertise == "192.0.2.8"


def test_classic_sessions_read_the_same(spark):
    assert not compat.is_connect(spark) and compat.server_is_local(spark)
    assert compat.master(spark) == spark.sparkContext.master
    assert compat.app_id(spark) == spark.sparkContext.applicationId
    assert compat.conf_get(spark, "spark.app.name") == spark.sparkContext.appName
    assert compat.num_partitions(spark.range(2).repartition(4)) == 4  # empty partitions count


@pytest.mark.slow
def test_training_inference_and_estimator_through_spark_connect():
    pytest.importorskip("google.rpc", reason="Spark Connect needs pyspark[connect]: pip install 'distkeras[spark]'")
    out = run_json_script(Path(__file__).with_name("_connect_job.py"), env=child_env(SPARK_TESTING="1"), timeout=1800)
    print("\nSpark Connect facts:", json.dumps(out))
    assert out["is_connect"] and out["master"] == "local[2]" and out["server_is_local"] and out["slots"] == 2
    assert out["partitions"] == [3, 4]
    for name, run in out["runs"].items():
        assert run["workers"] == [0, 1], name
        assert run["accuracy"] >= 0.85, f"{name} through Connect: test accuracy {run['accuracy']}"
        assert run["commits"] > 0, name
    assert out["runs"]["localsgd"]["rounds"] > 0 and out["runs"]["adag"]["rounds"] == 0
    assert out["runs"]["adag"]["epochs"] == list(range(1, out["epochs"] + 1))  # one validation record per epoch
    assert out["predict"]["rows"] == 360 and out["predict"]["max_abs_diff"] <= 1e-5 and out["predict"]["labels_match"]
    ours, keras_says = out["evaluate"]["distkeras"], out["evaluate"]["keras"]
    assert ours["accuracy"] == pytest.approx(keras_says["accuracy"], abs=1e-6)
    assert ours["loss"] == pytest.approx(keras_says["loss"], rel=1e-4)
    est = out["estimator"]
    assert est["accuracy"] >= 0.85 and est["max_abs_diff"] <= 1e-5 and est["labels_match"] and est["label_type"] == "double"
    assert est["reloaded_class"] == "KerasModel" and est["reloaded_max_abs_diff"] == 0.0
    err = out["worker_error"]
    assert err is not None and err["worker"] == 1 and err["type"] == "ValueError" and "worker one refuses 4 rows" in err["message"]
