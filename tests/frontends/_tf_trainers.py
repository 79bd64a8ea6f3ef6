"""Run by test_trainers.py in its own process, with ``KERAS_BACKEND=tensorflow`` (the backend is
fixed per process): start a local SparkSession, train the given trainers (comma-separated in
argv[1]) on the digits data with the settings of ``tests/training.py``, print one JSON line:
``{"backend": ..., "runs": {name: {"accuracy", "worker_backends", "commits", "strategy_check", "seconds"}}}``;
``strategy_check`` is ``"ok"`` or what ``tests.training.check_strategy_ran`` found wrong."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main() -> None:
    from distkeras.spark.session import get_or_create_session
    from tests.training import accuracy, check_strategy_ran, digits_frames, make_mlp, mlp_probs, trainer_kwargs

    spark = get_or_create_session("local[4]", app_name="distkeras-tf-trainers")
    try:
        import keras

        from distkeras.frontends import trainers

        train_df, _test_df, data = digits_frames(spark)
        runs = {}
        for name in sys.argv[1].split(","):
            t0 = time.perf_counter()
            trainer = trainers.make_trainer(getattr(trainers, name).strategy_name, make_mlp(), **trainer_kwargs())
            model = trainer.train(train_df)
            try:
                center = np.concatenate([np.ravel(w) for w in model.get_weights()])
                check_strategy_ran(name, trainer.history, trainer.members, center)
                strategy_check = "ok"
            except AssertionError as exc:
                strategy_check = f"{type(exc).__name__}: {exc}"[:2000]
            runs[name] = {
                "accuracy": accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test),
                "worker_backends": sorted({w["backend"] for w in trainer.history.workers}),
                "commits": trainer.history.server.get("commits_applied"),
                "strategy_check": strategy_check,
                "seconds": time.perf_counter() - t0,
            }
        print(json.dumps({"backend": keras.backend.backend(), "runs": runs}))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
