"""End-to-end benchmark on a local SparkSession, in sections measured side by side in one run.

Section ``data_feed``: rows per second from a cached DataFrame (200k rows x 100 float features,
one partition per task slot) into NumPy ``(x, y)`` through distkeras' Arrow path
(``run_workers`` -> ``mapInArrow`` -> ``collect_partition`` on the executors) against the row
path older Spark trainers use (``df.collect()`` of Row objects, then ``np.array`` on the driver).
Both end with the same float32 ``x`` and int32 ``y`` and touch every value (a sum).

The SparkSession start and the first job (Python workers starting) are reported separately in the
JSON's extra fields, not mixed into the rates.

    python benchmarks/end_to_end.py [--quick] [--sections data_feed]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(1, str(HERE.parent))

import numpy as np  # noqa: E402

from _common import best_of, parser, result, write_results  # noqa: E402

N_FEATURES = 100
N_CLASSES = 10


# --- section: data feed ------------------------------------------------------------------------


def _feed_worker(worker_id: int, attempt: int, x: np.ndarray, y: np.ndarray) -> dict:
    return {"rows": int(len(x)), "sum": float(x.sum(dtype=np.float64)), "labels": int(y.sum(dtype=np.int64))}


def section_data_feed(spark, args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from pyspark.sql import functions as F

    from distkeras.spark.feed import partition_data, prepare
    from distkeras.spark.session import task_slots
    from distkeras.spark.tasks import run_workers

    rows = 100_000 if args.quick else 200_000
    workers = task_slots(spark)
    t0 = time.perf_counter()
    raw = spark.range(rows).select(
        F.array(*[F.rand(seed=i).cast("float") for i in range(N_FEATURES)]).alias("features"),
        (F.col("id") % N_CLASSES).cast("int").alias("label"),
    )
    prepared, spec = prepare(raw, "features", "label", num_classes=N_CLASSES)
    data = partition_data(prepared, workers).cache()
    assert data.count() == rows
    cache_s = time.perf_counter() - t0

    def ours() -> None:
        summaries = run_workers(data, _feed_worker, workers, spec=spec, repartition=False)
        assert sum(s["rows"] for s in summaries) == rows

    def baseline() -> None:
        collected = data.collect()
        x = np.array([r["features"] for r in collected], dtype=np.float32)
        y = np.array([r["label"] for r in collected], dtype=np.int32)
        assert x.shape == (rows, N_FEATURES)
        float(x.sum(dtype=np.float64)), int(y.sum(dtype=np.int64))

    t0 = time.perf_counter()
    ours()  # first job: starts the Python workers
    first_job_s = time.perf_counter() - t0
    t_ours = best_of(ours, repeats=3 if args.quick else 5)
    t_base = best_of(baseline, repeats=1 if args.quick else 2)
    results = [
        result(
            f"data feed {rows // 1000}k x {N_FEATURES} -> numpy",
            "rows/s",
            rows / t_ours,
            rows / t_base,
            "df.collect() + np.array",
            target=20.0,
            higher_is_better=True,
        )
    ]
    extra = {
        "data_feed": {
            "rows": rows,
            "features": N_FEATURES,
            "workers": workers,
            "ours_s": t_ours,
            "baseline_s": t_base,
            "cache_build_s": cache_s,
            "first_job_s": first_job_s,
            "note": "ours: Arrow batches into NumPy on the executors (one task per task slot); "
            "baseline: Row objects collected to the driver, then np.array",
        }
    }
    data.unpersist()
    return results, extra


# The training half (a second section) is added here, against plain Keras on one process.
SECTIONS: dict[str, Callable[[Any, Any], tuple[list[dict[str, Any]], dict[str, Any]]]] = {
    "data_feed": section_data_feed,
}


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return None


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}")
    p.add_argument("--master", default="local[*]", help="Spark master (default local[*])")
    args = p.parse_args(argv)
    names = [s for s in args.sections.split(",") if s]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        p.error(f"unknown sections {unknown}; known: {list(SECTIONS)}")

    from distkeras.spark.session import get_or_create_session, task_slots

    t0 = time.perf_counter()
    spark = get_or_create_session(args.master, app_name="distkeras-bench")
    start_s = time.perf_counter() - t0
    results: list[dict[str, Any]] = []
    extra: dict[str, Any] = {
        "quick": bool(args.quick),
        "spark_master": spark.sparkContext.master,
        "task_slots": task_slots(spark),
        "cpus": os.cpu_count(),
        "spark_session_start_s": start_s,
        # Other work on the machine skews every figure here: record how busy it was.
        "load_average_1m_start": _loadavg(),
    }
    try:
        for name in names:
            rs, ex = SECTIONS[name](spark, args)
            results += rs
            extra.update(ex)
    finally:
        spark.stop()
    extra["load_average_1m_end"] = _loadavg()
    write_results("end_to_end", results, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
