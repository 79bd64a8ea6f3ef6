"""Run by test_multi_io.py with ``KERAS_BACKEND=tensorflow``: the runs of ``tests/multi_io.py``
on a local SparkSession, one JSON line of facts on stdout."""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main() -> None:
    from distkeras.spark.session import get_or_create_session
    from tests.multi_io import run_all

    spark = get_or_create_session("local[2]", app_name="distkeras-tf-multi-io")
    try:
        facts = run_all(spark)
    finally:
        spark.stop()
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
