"""Every dist-keras-compatible trainer learns the bundled digits in local Spark, and runs its own
strategy doing so.

4 workers on ``local[4,2]``, each strategy at its documented defaults, the same Keras settings
for all (``tests/training.py``: Adam(0.005), batch 16, 20 epochs): test accuracy >= 0.90; the
history and the parameter server's stats show the trainer's strategy at work (one commit per
window of each worker, rounds for the synchronous ones, each payload scaled as the strategy
says, no server for single and ensemble): ``tests.training.check_strategy_ran``.
This process runs JAX; a subprocess runs an asynchronous and a synchronous trainer on
TensorFlow. Accuracies are computed with a NumPy forward pass of the returned model's weights
(no compilation on the driver); ``test_history`` checks it against Keras's own evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import child_env, run_json_script
from tests.training import MIN_ACCURACY, TRAINER_STRATEGY, WORKERS, accuracy, check_strategy_ran, make_mlp, member_weights, mlp_probs, trainer_kwargs

pytestmark = pytest.mark.slow


TRAINERS = list(TRAINER_STRATEGY)


def test_every_trainer_is_tested():
    from distkeras.frontends import trainers

    assert {t.__name__ for t in trainers.TRAINERS.values()} == set(TRAINERS)


@pytest.fixture(scope="module")
def trained(spark, digits):
    """Train a trainer once per module (``trained(name)`` -> (trainer, model)); ADAG also gets the
    test set as validation data, for the history checks."""
    from distkeras.frontends import trainers

    train_df, test_df, _ = digits
    done: dict[str, tuple] = {}

    def train(name: str):
        if name not in done:
            # make_trainer: the generic num_workers is EnsembleTrainer's num_ensembles; SingleTrainer has one worker
            trainer = trainers.make_trainer(getattr(trainers, name).strategy_name, make_mlp(), **trainer_kwargs(spark=spark))
            model = trainer.train(train_df, validation=test_df if name == "ADAG" else None)
            done[name] = (trainer, model)
        return done[name]

    return train


def test_accuracy_of_every_trainer_on_jax(trained, digits, record_property):
    """All twelve in one test so the figures come out together (and one failure names all)."""
    _, _, data = digits
    accuracies, failures = {}, []
    for name in TRAINERS:
        trainer, model = trained(name)
        if name == "EnsembleTrainer":
            assert len(trainer.members) == WORKERS
            probs = np.mean([mlp_probs(member_weights(m), data.x_test) for m in trainer.members], axis=0)
        else:
            probs = mlp_probs(model.get_weights(), data.x_test)
        accuracies[name] = acc = accuracy(probs, data.y_test)
        record_property(name, round(acc, 4))
        workers = trainer.history.workers
        assert {w["backend"] for w in workers} == {"jax"}
        assert len(workers) == (1 if name == "SingleTrainer" else WORKERS)
        if acc < MIN_ACCURACY:
            failures.append(f"{name}: {acc:.3f}")
    print("\ntest accuracy (JAX, 4 workers):", json.dumps({k: round(v, 3) for k, v in accuracies.items()}))
    assert not failures, f"below {MIN_ACCURACY}: {failures}; all: {accuracies}"


@pytest.mark.parametrize("name", TRAINERS)
def test_trainer_runs_its_own_strategy(trained, name):
    trainer, model = trained(name)
    center = np.concatenate([np.ravel(w) for w in model.get_weights()]) if not trainer.members else None
    check_strategy_ran(name, trainer.history, trainer.members, center)


def test_ensemble_predicts_with_the_mean_of_its_members(trained, digits):
    trainer, model = trained("EnsembleTrainer")
    _, _, data = digits
    mean = np.mean([mlp_probs(member_weights(m), data.x_test) for m in trainer.members], axis=0)
    np.testing.assert_allclose(model.predict(data.x_test, verbose=0), mean, rtol=1e-4, atol=1e-6)


def test_history(trained, digits, tmp_path):
    """Per-worker commit records, per-epoch center metrics on the validation data, server stats, PNG."""
    from tests.training import EPOCHS

    _, _, data = digits
    trainer, model = trained("ADAG")
    h = trainer.history
    per_worker = {w: [c for c in h.commits if c["worker"] == w] for w in range(WORKERS)}
    for w, commits in per_worker.items():
        assert commits, f"worker {w} recorded no commits"
        for c in commits:
            assert np.isfinite(c["loss"]) and c["staleness"] >= 0 and c["bytes"] > 0 and c["samples"] > 0
        assert [c["t"] for c in commits] == sorted(c["t"] for c in commits)
    # every commit the workers recorded was applied once, and the server saw them all
    assert h.server["commits_applied"] == len(h.commits) == sum(h.server["workers"][str(w)]["commits"] for w in range(WORKERS))
    assert h.server["rejected_total"] == 0 and h.server["duplicates"] == 0
    assert h.server["samples"] == sum(c["samples"] for c in h.commits)
    assert sum(c["bytes"] for c in h.commits) == len(h.commits) * 4 * model.count_params()
    # center metrics per epoch: increasing epochs, the last one at the end of training
    epochs = [e["epoch"] for e in h.epochs]
    assert epochs == sorted(set(epochs)) and epochs[-1] == EPOCHS
    assert all({"loss", "accuracy", "samples"} <= set(e) for e in h.epochs)
    # the last record is Keras's evaluation of the returned center: the NumPy forward pass agrees
    ours = accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test)
    assert h.epochs[-1]["accuracy"] == pytest.approx(ours, abs=1e-6)
    assert h.timings["train_seconds"] > 0 and h.timings["total_seconds"] >= h.timings["train_seconds"]
    png = h.plot(tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # a round trip through JSON keeps everything
    from distkeras.spark.history import History

    again = History.load(h.save(tmp_path / "h.json"))
    assert again.commits == h.commits and again.epochs == h.epochs


def test_history_of_a_synchronous_run(trained):
    """LocalSGD: the server applied every commit of every round; workers commit in lock-step."""
    trainer, _ = trained("LocalSGD")
    h = trainer.history
    counts = {w["worker"]: len([c for c in h.commits if c["worker"] == w["worker"]]) for w in h.workers}
    assert len(set(counts.values())) == 1, counts  # one commit per worker per round
    rounds = next(iter(counts.values()))
    assert h.server["round"] == rounds and h.server["commits_applied"] == WORKERS * rounds
    assert h.server["rejected_total"] == 0


def test_two_trainers_on_tensorflow():
    """ADAG (asynchronous) and LocalSGD (synchronous, barrier) with KERAS_BACKEND=tensorflow on
    the driver and the executors, in a subprocess with its own local[4] SparkSession."""
    pytest.importorskip("tensorflow")
    env = child_env(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    out = run_json_script(Path(__file__).with_name("_tf_trainers.py"), "ADAG,LocalSGD", env=env)
    print("\ntest accuracy (TensorFlow, 4 workers):", json.dumps({k: round(v["accuracy"], 3) for k, v in out["runs"].items()}))
    assert out["backend"] == "tensorflow"
    for name, run in out["runs"].items():
        assert run["worker_backends"] == ["tensorflow"], name
        assert run["strategy_check"] == "ok", f"{name} on TensorFlow: {run['strategy_check']}"
        assert run["accuracy"] >= MIN_ACCURACY, f"{name} on TensorFlow: {run['accuracy']:.3f}"
