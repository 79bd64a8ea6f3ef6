"""Several inputs and outputs, sample and class weights, through the trainer API on local Spark.

``tests/multi_io.py`` trains (digits, 2 workers, 8 epochs): a two-input model from a list of
columns (ADAG), a two-output model from a dict of label columns (LocalSGD, barrier), and a
one-output model with ``class_weight`` 0 on one digit and a ``sample_weight_col`` of 0 on
another. JAX runs in this process, TensorFlow in a subprocess (the backend is per process).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.multi_io import ZERO_CLASS, ZERO_WEIGHT_CLASS
from tests.support import child_env, run_json_script

pytestmark = pytest.mark.slow


def check(facts: dict, backend: str) -> None:
    """Every expectation, failures reported together (one run costs minutes)."""
    print(f"\nmulti-io facts ({backend}):", json.dumps(facts, default=str))
    failed: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            failed.append(what)

    expect(facts["backend"] == backend, f"backend {facts['backend']}")
    two_in, two_out, weighted = facts["two_input"], facts["two_output"], facts["weighted"]
    expect(two_in["worker_backends"] == [backend], f"two-input workers ran {two_in['worker_backends']}")
    # ADAG commits Δ/λ: 8 epochs on 2 workers learn well above chance (0.1), not to the end
    expect(two_in["accuracy"] >= 0.6, f"two-input accuracy {two_in['accuracy']}")
    expect(abs(two_in["evaluate"]["accuracy"] - two_in["accuracy"]) <= 1e-4, f"two-input evaluate {two_in['evaluate']} vs {two_in['accuracy']}")
    expect(two_out["worker_backends"] == [backend], f"two-output workers ran {two_out['worker_backends']}")
    expect(two_out["digit_accuracy"] >= 0.7, f"two-output digit accuracy {two_out['digit_accuracy']} (chance 0.1)")
    expect(two_out["big_accuracy"] >= 0.7, f"two-output big accuracy {two_out['big_accuracy']} (chance ~0.5)")
    expect(
        two_out["predict_columns"] == ["features", "label", "prediction_digit", "predicted_label_digit", "prediction_big"],
        f"predict columns {two_out['predict_columns']}",
    )
    expect(two_out["predict_matches_keras"] is not None and two_out["predict_matches_keras"] <= 1e-4, f"predict vs keras {two_out['predict_matches_keras']}")
    expect(abs(two_out["predicted_label_accuracy"] - two_out["digit_accuracy"]) <= 1e-6, f"predicted_label accuracy {two_out['predicted_label_accuracy']}")
    recall = {int(k): v for k, v in weighted["recall"].items()}
    # a class of weight 0 is never learned (its rows go to other digits); the others are
    expect(recall[ZERO_CLASS] <= 0.05, f"class_weight 0: recall of {ZERO_CLASS} is {recall[ZERO_CLASS]}")
    expect(recall[ZERO_WEIGHT_CLASS] <= 0.05, f"sample weight 0: recall of {ZERO_WEIGHT_CLASS} is {recall[ZERO_WEIGHT_CLASS]}")
    expect(weighted["accuracy_others"] >= 0.85, f"weighted run, accuracy on the other digits {weighted['accuracy_others']}")
    assert not failed, f"{backend}: " + "; ".join(failed)


def test_multi_io_and_weights_on_jax(spark):
    from tests.multi_io import run_all

    check(run_all(spark), "jax")


def test_multi_io_and_weights_on_tensorflow():
    pytest.importorskip("tensorflow")
    env = child_env(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    check(run_json_script(Path(__file__).with_name("_tf_multi_io.py"), env=env), "tensorflow")
