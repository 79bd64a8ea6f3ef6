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
