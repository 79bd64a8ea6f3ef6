"""Turn Spark's account of a failed job into one clear error when the cause is the cluster's
environment rather than the training: an executor whose Python lacks distkeras (or cannot be
started), or data that only the driver can read.

Spark reports such failures as a ``Py4JJavaError``/``PythonException`` whose text holds the
executor's host (``(TID 3) (192.0.2.2 executor 0)``) and the Python or Java exception; nothing
here imports pyspark.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Any

from .errors import DataPathError, ExecutorEnvironmentError

_HOST = re.compile(r"\(TID \d+\) \(([^\s()]+) executor [^)]+\)")
_MISSING_MODULE = re.compile(r"No module named '([^']+)'")
_CANNOT_RUN = re.compile(r'Cannot run program "([^"]+)"[^:]*: error=\d+, ([^\n]+)')
_NO_FILE = re.compile(r"(?:File|Path does not exist:?)\s+(file:[^\s,;]+?)(?:\s+does not exist|[\s.,;]|$)")
_FILE_NOT_EXIST = re.compile(r"FILE_NOT_EXIST\][^\n]*?(file:[^\s,;]+)")


def error_text(exc: BaseException) -> str:
    """Everything Spark says about a failure: the Python-side message and, for Py4JJavaError, the
    Java exception with its causes."""
    parts = [str(exc)]
    # Py4JJavaError has java_exception; PySpark's captured exceptions (PythonException...) _origin
    java = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    if java is not None:
        try:
            parts.append(str(java.toString()))
            cause = java.getCause()
            while cause is not None:
                parts.append(str(cause.toString()))
                cause = cause.getCause()
        except Exception:  # the JVM is gone: keep what we have
            pass
    return "\n".join(parts)


def executor_python(spark: Any) -> str:
    """The interpreter the executors are told to run (what Spark would start)."""
    for key in ("spark.executorEnv.PYSPARK_PYTHON", "spark.pyspark.python"):
        try:
            value = spark.conf.get(key, None)
        except Exception:
            value = None
        if value:
            return str(value)
    return os.environ.get("PYSPARK_PYTHON") or "python3 (Spark's default: PYSPARK_PYTHON is not set)"


def explain(exc: BaseException, spark: Any) -> Exception | None:
    """A clear error for an environment failure in ``exc``, or None when it is something else
    (a worker's own exception, a bug, a bad input already named)."""
    from .errors import WorkerError

    if isinstance(exc, (ExecutorEnvironmentError, DataPathError)):
        return None
    if isinstance(exc, WorkerError) and exc.worker_id is not None:  # the worker's own exception: keep it
        return None
    spark_side = {c.__name__ for c in type(exc).__mro__} & {"Py4JJavaError", "CapturedException", "PySparkException"}
    if not spark_side and not isinstance(exc, WorkerError):  # not a failed Spark job
        return None
    text = error_text(exc)
    host = _HOST.search(text)
    host = host.group(1) if host else None
    run = _CANNOT_RUN.search(text)
    if run:
        return ExecutorEnvironmentError(run.group(1), f"cannot be started: {run.group(2).strip()}", host)
    missing = _MISSING_MODULE.search(text)
    if missing:
        name = missing.group(1)
        return ExecutorEnvironmentError(executor_python(spark), f"cannot import {name!r} (No module named {name!r})", host, name)
    path = _FILE_NOT_EXIST.search(text) or _NO_FILE.search(text)
    if path:
        return DataPathError(path.group(1).rstrip("."), host)
    return None


@contextmanager
def explained(spark: Any):
    """Run Spark jobs; re-raise an environment failure as its clear error (the original chained)."""
    try:
        yield
    except Exception as exc:
        env = explain(exc, spark)
        if env is None:
            raise
        raise env from exc
