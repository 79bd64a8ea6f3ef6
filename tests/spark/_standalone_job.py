"""Run by test_standalone.py in its own process (one SparkContext per process): run_workers on
a standalone master given as argv[1]; print one JSON line with what each worker saw."""

from __future__ import annotations

import json
import os
import sys


def java_ancestor(pid: int) -> int | None:
    """The nearest ancestor of ``pid`` that is a JVM (Linux /proc), i.e. the executor running
    this Python worker."""
    while pid > 1:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "java":
                    return pid
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return None
    return None


def worker(worker_id, attempt, x, y):
    return {"worker": worker_id, "rows": len(x), "pid": os.getpid(), "jvm": java_ancestor(os.getpid()), "cwd": os.getcwd()}


def main() -> None:
    from pyspark.sql import functions as F

    from distkeras.spark.session import get_or_create_session
    from distkeras.spark.tasks import run_workers

    spark = get_or_create_session(sys.argv[1], app_name="distkeras-standalone-test", conf={"spark.executor.memory": "512m"})
    try:
        df = spark.range(500).select(F.array(F.col("id").cast("float")).alias("features"), (F.col("id") % 2).alias("label"))
        plain = run_workers(df, worker, 2)
        barrier = run_workers(df, worker, 2, barrier=True)
        out = {"driver_pid": os.getpid(), "driver_jvm": spark.sparkContext._jvm.ProcessHandle.current().pid(), "plain": plain, "barrier": barrier}
    finally:
        spark.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
