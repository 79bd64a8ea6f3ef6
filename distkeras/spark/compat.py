"""Classic PySpark and Spark Connect behind one small API.

A Spark Connect session (``SparkSession.builder.remote(...)``: Spark 4's thin client, shared
Databricks clusters) has no ``sparkContext``, no JVM handles and no ``DataFrame.rdd``; what
distkeras needs from Spark it reads here, the same way for both kinds of session:

- :func:`is_connect`: is this session (or DataFrame) a Connect one;
- :func:`conf_get`: a Spark setting, static ones included (``spark.master``,
  ``spark.executorEnv.*``), through ``spark.conf`` (under Connect, the server's settings);
- :func:`master`: the master URL the session's jobs run on;
- :func:`num_partitions`: how many partitions a DataFrame has (under Connect, a light job
  that emits one row per partition: Connect has no other way to tell);
- :func:`memory_bytes`: a memory setting (``spark.driver.memory``, ``spark.executor.pyspark.memory``)
  in bytes, read as Spark reads it;
- :func:`connect_host` / :func:`server_is_local`: where a Connect session's server runs. Under
  Connect the Python process that calls ``train`` (and hosts the parameter server) is the
  *client*, not the Spark driver: executors reach it on loopback only when the server, hence
  its local-mode executors, run on this machine.

Nothing here starts a session; pyspark is imported lazily.
"""

from __future__ import annotations

import re
from typing import Any

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_connect(obj: Any) -> bool:
    """True for a Spark Connect SparkSession or DataFrame (or anything else from
    ``pyspark.sql.connect``); False for classic PySpark objects."""
    return type(obj).__module__.startswith("pyspark.sql.connect.")


def conf_get(spark: Any, key: str) -> str | None:
    """The value of the Spark setting ``key`` for ``spark`` (None when unset or unreadable).
    Classic: the SparkContext's conf, then the session's; Connect: the server session's
    ``spark.conf`` (which falls back to the server's SparkConf)."""
    if not is_connect(spark):
        try:
            value = spark.sparkContext.getConf().get(key)
            if value:
                return str(value)
        except Exception:  # a stopped context: the session conf below may still answer
            pass
    try:
        value = spark.conf.get(key, None)
    except Exception:  # a key the server refuses to show
        return None
    return str(value) if value else None


def master(spark: Any) -> str:
    """The master URL (``local[2]``, ``spark://host:7077``, ``yarn``...), '' when unknown."""
    if not is_connect(spark):
        return str(spark.sparkContext.master)
    return conf_get(spark, "spark.master") or ""


def app_id(spark: Any) -> str | None:
    """The Spark application id (None when unknown)."""
    if not is_connect(spark):
        return str(spark.sparkContext.applicationId)
    return conf_get(spark, "spark.app.id")


def memory_bytes(text: str) -> int:
    """A Spark memory setting in bytes: a number of MiB, or with a unit (512m, 2g, 1t, 64kb).
    ValueError naming the text otherwise."""
    m = re.match(r"^\s*(\d+)\s*([kmgt]?)b?\s*$", str(text).lower())
    if not m:
        raise ValueError(f"cannot read the memory size {text!r}")
    return int(m.group(1)) * 2 ** {"": 20, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2)]


def _one_row(batches):
    """mapInArrow function of :func:`num_partitions`: one row per partition, empty or not."""
    import pyarrow as pa

    for _ in batches:  # drain the input; the rows themselves are not needed
        pass
    yield pa.RecordBatch.from_arrays([pa.array([1], pa.int8())], names=["one"])


def num_partitions(df: Any) -> int:
    """The number of partitions of ``df``. Classic: from its RDD, without running a job.
    Connect has no RDDs: a job that reads no column (a literal instead) and emits one row per
    partition, empty partitions included, counts them."""
    if not is_connect(df):
        return int(df.rdd.getNumPartitions())
    from pyspark.sql import functions as F

    return int(df.select(F.lit(1).alias("one")).mapInArrow(_one_row, "one byte").count())


def connect_host(spark: Any) -> str | None:
    """The host a Connect session's client talks to (``localhost`` for ``remote("local[*]")``);
    None for a classic session."""
    if not is_connect(spark):
        return None
    try:
        return str(spark.client.host)
    except Exception:  # an unusual channel builder
        return None


def server_is_local(spark: Any) -> bool:
    """True when ``spark`` is classic (the driver is this process) or a Connect session whose
    server runs on this machine (a loopback address: ``remote("local[*]")`` or
    ``sc://localhost``), so that Spark's notion of the driver's host is also this machine's."""
    if not is_connect(spark):
        return True
    host = (connect_host(spark) or "").strip().lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")




class ConnectPsHostError(ValueError):
    """A run through a remote Spark Connect server needs the parameter server's address."""


def require_ps_host(spark: Any, ps_host: str | None) -> bool:
    """For a Connect session whose server runs on another machine: True when ``ps_host`` or
    ``$DISTKERAS_PS_HOST`` names the address the executors reach the parameter server at,
    else :class:`ConnectPsHostError`. False for classic sessions and local Connect servers
    (Spark's driver host, or loopback for a local master, is then an address of this machine)."""
    if server_is_local(spark):
        return False
    import os

    from distkeras.ps.endpoint import ENV_PS_HOST

    if (ps_host or os.environ.get(ENV_PS_HOST, "")).strip():
        return True
    raise ConnectPsHostError(
        f"this Spark Connect session talks to a server on {connect_host(spark)!r}: the parameter server of an "
        "asynchronous or synchronous strategy runs here, in the Connect client, not on the Spark driver, so "
        "neither the driver's address nor loopback reaches it from the executors. Set ps_host= (psHost in the "
        f"Estimator) or ${ENV_PS_HOST} to an address of this machine that the executors can reach (the server "
        "listens on a free port chosen at each run), or use a classic SparkSession (see the README, Spark Connect)"
    )


__all__ = [
    "ConnectPsHostError",
    "app_id",
    "conf_get",
    "connect_host",
    "is_connect",
    "master",
    "num_partitions",
    "require_ps_host",
    "server_is_local",
]
