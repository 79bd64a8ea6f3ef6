"""The Keras adapter on each backend, each backend in its own process.

Keras fixes its backend per process, so the checks run in subprocesses
(``_worker.py``), one per backend, each running every check and reporting JSON; the
tests here assert on that report, one test per check and backend. The cross-backend
test chains them: a model built under TensorFlow is trained under JAX and loaded
back under TensorFlow (spec and vectors pass through JSON + .npy files).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT, child_env

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_worker.py")

CHECKS = [
    "basics",
    "flat_roundtrip",
    "optimizer_state",
    "fast_vs_generic",
    "multi_io_fast_vs_generic",
    "nesterov",
    "inference",
    "custom_layer",
    "bad_input",
    "compiled_model",
]


def installed(backend: str) -> bool:
    modules = {"jax": ("keras", "jax"), "tensorflow": ("keras", "tensorflow"), "torch": ("keras", "torch")}[backend]
    return all(importlib.util.find_spec(m) is not None for m in modules)


BACKEND_PARAMS = [
    pytest.param(b, marks=pytest.mark.skipif(not installed(b), reason=f"{b} is not installed"))
    for b in ("tensorflow", "jax", "torch")
]
CROSS = installed("tensorflow") and installed("jax")


def run_worker(backend: str, tasks: list[str], workdir: str) -> dict:
    out = os.path.join(workdir, f"report_{backend}_{tasks[-1]}.json")
    env = child_env(KERAS_BACKEND=backend, KERAS_HOME=os.path.join(workdir, "keras_home"), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, WORKER, "--backend", backend, "--tasks", ",".join(tasks), "--workdir", workdir, "--out", out]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not os.path.exists(out):
        pytest.fail(f"{backend} worker failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    with open(out, encoding="utf-8") as fh:
        return json.load(fh)


class Runs:
    """Runs each worker once, on first use, and keeps its report."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.reports: dict[str, dict] = {}

    def main(self, backend: str) -> dict:
        if backend not in self.reports:
            tasks = list(CHECKS)
            if CROSS and backend == "tensorflow":
                tasks.append("cross_build")
            if CROSS and backend == "jax":
                self.main("tensorflow")
                tasks.append("cross_train")
            self.reports[backend] = run_worker(backend, tasks, self.workdir)
        return self.reports[backend]

    def cross_check(self) -> dict:
        self.main("jax")
        return run_worker("tensorflow", ["cross_check"], self.workdir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(str(tmp_path_factory.mktemp("adapter")))


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request) -> str:
    return request.param


def check(report: dict, name: str) -> dict:
    entry = report[name]
    if not entry["ok"]:
        pytest.fail(f"check {name!r} failed in the worker:\n{entry['error']}")
    return entry


def test_basics_and_backend_switch_error(runs, backend):
    facts = check(runs.main(backend), "basics")
    assert facts["backend"] == backend
    assert "already imported" in facts["switch_error"]
    if backend in ("jax", "tensorflow"):
        assert facts["fast_path"]


def test_flat_roundtrip_bit_exact_with_batchnorm_stats(runs, backend):
    facts = check(runs.main(backend), "flat_roundtrip")
    assert facts["max_diff_fast_vs_generic"] <= 1e-6  # same operations, same bits
    if backend == "jax":  # both ways of writing the weights (compiled split, aligned puts)
        assert facts["kinds"] == ["fast", "fast_aligned", "generic"]
        assert facts["max_diff_aligned_vs_generic"] <= 1e-6


def test_optimizer_state_persists_across_windows(runs, backend):
    facts = check(runs.main(backend), "optimizer_state")
    # Two windows == one fit over the same batches; a reset optimizer would not match.
    assert facts["max_diff_vs_fit"] <= 1e-5
    assert facts["max_diff_reset_vs_fit"] > 1e-4
    assert facts["optimizer_iterations"] == 8


def test_fast_path_matches_generic_path(runs, backend):
    facts = check(runs.main(backend), "fast_vs_generic")
    assert len(facts["weight_diffs"]) == 4  # three windows of 4 batches, one of 11
    assert max(facts["weight_diffs"]) <= 1e-5
    if backend == "jax":  # chunks of at most 8 compiled steps; a longer window's rest one step a call
        assert facts["chunks"] == {
            "1": [[0, 1]],
            "5": [[0, 5]],
            "8": [[0, 8]],
            "11": [[0, 8], [8, 1], [9, 1], [10, 1]],
            "16": [[0, 8], [8, 8]],
        }


def test_multi_io_weighted_fast_path_matches_generic_path(runs, backend):
    """Two inputs, two outputs, sample weights: fast path == train_on_batch; weight 2 == 2x the rate (SGD)."""
    facts = check(runs.main(backend), "multi_io_fast_vs_generic")
    assert max(facts["weight_diffs"]) <= 1e-5 and facts["weight2_vs_lr2"] <= 1e-5


def test_nesterov_worker_optimizer(runs, backend):
    check(runs.main(backend), "nesterov")


def test_predict_evaluate_and_spec_files(runs, backend):
    facts = check(runs.main(backend), "inference")
    assert facts["predict_vs_call"] <= 1e-5


def test_custom_registered_layer(runs, backend):
    facts = check(runs.main(backend), "custom_layer")
    assert facts["modules"] == ["tests.backends.custom_layers"]


def test_bad_input_errors(runs, backend):
    facts = check(runs.main(backend), "bad_input")
    assert "Layout of" in facts["short"] and "float32" in facts["dtype"]
    assert "not built" in facts["unbuilt_spec"]


def test_model_compiled_on_the_driver(runs, backend):
    check(runs.main(backend), "compiled_model")


@pytest.mark.skipif(not CROSS, reason="needs both tensorflow and jax")
def test_cross_backend_tensorflow_jax_tensorflow(runs):
    built = check(runs.main("tensorflow"), "cross_build")
    trained = check(runs.main("jax"), "cross_train")
    assert trained["moved"] > 0  # training under JAX changed the weights
    checked = check(runs.cross_check(), "cross_check")
    assert built["built_on"] == "tensorflow" and trained["trained_on"] == "jax"
    assert checked["checked_on"] == "tensorflow"
    assert checked["flat_bit_equal"] is True
    assert checked["max_pred_diff"] <= 1e-5
