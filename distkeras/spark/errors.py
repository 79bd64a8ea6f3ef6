"""Errors raised by the Spark layer. Importing this module does not import pyspark."""

from __future__ import annotations


class SparkUnavailableError(RuntimeError):
    """Spark cannot start here (no Java 17+, or pyspark missing)."""


class FeedError(ValueError):
    """The DataFrame does not fit the feed: a missing column, a wrong type, a wrong shape."""


class NotEnoughSlotsError(RuntimeError):
    """A barrier (synchronous) run needs more task slots at once than the cluster has."""

    def __init__(self, needed: int, available: int | None, strategy: str | None = None, detail: str = ""):
        self.needed = needed
        self.available = available
        self.strategy = strategy
        who = f"strategy {strategy} is synchronous and" if strategy else "a synchronous (barrier) run"
        have = f"the cluster has {available}" if available is not None else "the cluster has fewer"
        msg = (
            f"{who} needs {needed} task slots at once; {have}; "
            "lower num_workers or add executors/cores"
        )
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class WorkerError(RuntimeError):
    """A worker function raised inside a Spark task; carries the worker's own traceback."""

    def __init__(
        self,
        worker_id: int | None,
        attempt: int | None,
        exc_type: str,
        message: str,
        worker_traceback: str,
    ):
        self.worker_id = worker_id
        self.attempt = attempt
        self.exc_type = exc_type
        self.worker_message = message
        self.worker_traceback = worker_traceback
        where = f"worker {worker_id}" if worker_id is not None else "a worker"
        if attempt is not None:
            where += f" (task attempt {attempt})"
        text = f"{where} failed: {exc_type}: {message}"
        if worker_traceback:
            text += "\n\nWorker traceback:\n" + worker_traceback.rstrip()
        super().__init__(text)


class ExecutorEnvironmentError(RuntimeError):
    """An executor's Python cannot run distkeras: the interpreter is missing on its host, or it
    lacks a module (distkeras itself, the Keras backend, pyarrow...)."""

    def __init__(self, python: str, problem: str, host: str | None = None, missing: str | None = None):
        self.python = python
        self.problem = problem
        self.host = host
        self.missing = missing
        where = f" on {host}" if host else ""
        super().__init__(
            f"the executors' Python ({python}){where} {problem}. Every executor needs a Python with distkeras and "
            "its extras installed (pip install 'distkeras[all]' on each host, or a shared virtual environment / "
            "a packed environment shipped with --archives), named by PYSPARK_PYTHON or spark.pyspark.python; "
            "see the README's 'Running on a cluster'"
        )


class DataPathError(FileNotFoundError):
    """Training data the driver can read but the executors cannot (a local path on a cluster)."""

    def __init__(self, path: str, host: str | None = None):
        self.path = path
        self.host = host
        where = f" (on {host})" if host else ""
        super().__init__(
            f"the executors cannot read {path}{where}: on a cluster every executor reads the data itself, so the path "
            "must be readable from every host (HDFS, S3, a shared or replicated file system), not a file local to "
            "the driver; or load it on the driver and pass a DataFrame made from it"
        )
