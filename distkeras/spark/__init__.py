"""The Spark layer: session, Arrow data feed, per-partition worker tasks, test cluster.

Names are imported lazily, so ``import distkeras.spark`` does not import pyspark.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SparkUnavailableError": "errors",
    "FeedError": "errors",
    "NotEnoughSlotsError": "errors",
    "WorkerError": "errors",
    "get_or_create_session": "session",
    "check_java": "session",
    "task_slots": "session",
    "FeedSpec": "feed",
    "prepare": "feed",
    "arrow_batches_to_numpy": "feed",
    "collect_partition": "feed",
    "partition_data": "feed",
    "run_workers": "tasks",
    "BatchSource": "source",
    "ArraySource": "source",
    "open_source": "spill",
    "current_task": "tasks",
    "TaskInfo": "tasks",
    "GpuConfigError": "gpus",
    "GpuPinningError": "gpus",
    "NotEnoughGpusError": "gpus",
    "LocalStandaloneCluster": "testing",
    "NamespaceCluster": "testing",
    "NamespaceUnavailableError": "testing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'distkeras.spark' has no attribute {name!r}")
    return getattr(importlib.import_module(f"distkeras.spark.{module}"), name)


def __dir__():
    return __all__
