"""Run by test_runner.py in its own process (one SparkContext per process): ADAG with 2 workers
on the digits data against the standalone master given as argv[1]; print one JSON line with the
test accuracy and, for each worker, its pid, Keras backend and the JVM it runs under."""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.spark._standalone_job import java_ancestor  # noqa: E402


def main() -> None:
    from distkeras.frontends.trainers import ADAG
    from distkeras.spark.session import get_or_create_session
    from tests.training import accuracy, digits_frames, make_mlp, mlp_probs, trainer_kwargs

    spark = get_or_create_session(sys.argv[1], app_name="distkeras-standalone-train", conf={"spark.executor.memory": "512m"})
    try:
        train_df, _test_df, data = digits_frames(spark)
        trainer = ADAG(make_mlp(), **trainer_kwargs(num_workers=2, spark=spark))
        model = trainer.train(train_df)
        workers = [
            {"worker": w["worker"], "pid": w["pid"], "backend": w["backend"], "jvm": java_ancestor(w["pid"]), "commits": len([c for c in trainer.history.commits if c["worker"] == w["worker"]])}
            for w in trainer.history.workers
        ]
        out = {
            "accuracy": accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test),
            "driver_pid": os.getpid(),
            "driver_jvm": spark.sparkContext._jvm.ProcessHandle.current().pid(),
            "master": spark.sparkContext.master,
            "workers": workers,
            "commits_applied": trainer.history.server["commits_applied"],
        }
    finally:
        spark.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
