"""Every trainer at its recommended settings (``distkeras.recommended``) learns the digits with 2
and 4 workers through the trainer API on local Spark (JAX): test accuracy >= 0.90, without a
StrategySettingsWarning; a trainer in a regime the evidence shows slow warns when ``train``
starts, before any Spark job; ``distkeras strategies --workers N --json`` prints the same
settings. Accuracies are computed with a NumPy forward pass of the returned model's weights.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import distkeras
from distkeras.core.recommend import StrategySettingsWarning, recommended_all
from distkeras.core.strategies import STRATEGIES
from distkeras.frontends import cli
from distkeras.frontends.trainers import TRAINERS, make_trainer
from tests.training import MIN_ACCURACY, accuracy, make_mlp, member_weights, mlp_probs


def build(name: str, kwargs: dict):
    return make_trainer(name, make_mlp(0), loss="sparse_categorical_crossentropy", metrics=["accuracy"], progress=False, **kwargs)


def test_lazy_exports():
    assert distkeras.recommended("adag", 4) == recommended_all(4)["adag"]
    assert distkeras.StrategySettingsWarning is StrategySettingsWarning
    assert issubclass(StrategySettingsWarning, UserWarning)


@pytest.mark.parametrize("workers", [2, 4])
def test_every_recommendation_is_accepted_by_its_trainer_class(keras, workers):
    """The keyword arguments are each class's own (``communication_window``, ``num_ensembles``):
    the class takes them directly, and ``make_trainer`` takes them too."""
    for name, kwargs in recommended_all(workers).items():
        trainer = TRAINERS[name](make_mlp(0), loss="sparse_categorical_crossentropy", progress=False, **kwargs)
        assert trainer.strategy.name == name
        assert trainer.num_workers == (1 if name == "single" else workers)
        assert trainer.settings_notes() == []
        assert build(name, kwargs).strategy == trainer.strategy


def test_a_slow_setting_warns_before_the_run_starts(spark, keras):
    """The issue's ADAG (Keras's default Adam, batch 32, 10 epochs, window 12, 4 workers): one
    StrategySettingsWarning naming the number and the recommended setting, raised by ``train``
    before any Spark job: here the data is too small to train at all, and the warning still came."""
    trainer = make_trainer("adag", make_mlp(0), worker_optimizer="adam", num_workers=4, batch_size=32, num_epoch=10, progress=False)
    tiny = spark.createDataFrame([([0.0] * 64, 0)] * 8, "features array<float>, label long")
    with pytest.warns(StrategySettingsWarning) as caught, pytest.raises(ValueError, match="fewer than one batch"):
        trainer.train(tiny)
    (w,) = [w for w in caught if issubclass(w.category, StrategySettingsWarning)]
    assert "ADAG: adag commits delta/window" in str(w.message) and "window 4 with adam learning rate 0.01" in str(w.message)
    assert w.filename == __file__  # points at the caller's train()


def test_strategies_cli_json(capsys):
    assert cli.main(["strategies", "--workers", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == recommended_all(4)
    assert cli.main(["strategies", "--workers", "8", "--optimizer", "sgd", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == recommended_all(8, "sgd")
    assert cli.main(["strategies", "--workers", "4"]) == 0
    table = capsys.readouterr().out
    assert all(f"\n{name} " in table for name in STRATEGIES)
    assert cli.main(["strategies", "--workers", "0"]) == 2
    assert "workers must be an integer >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["strategies", "--json"]) == 0  # without --workers: the defaults and papers
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == list(STRATEGIES)


#: every trainer with 2 and 4 workers (the single trainer has one: once)
RUNS = [(name, n) for n in (2, 4) for name in STRATEGIES if not (name == "single" and n == 4)]


@pytest.mark.slow
@pytest.mark.parametrize("name, workers", RUNS)
def test_every_trainer_learns_at_its_recommended_settings(spark, digits, name, workers, record_property):
    train_df, _, data = digits
    trainer = build(name, recommended_all(workers)[name])
    with warnings.catch_warnings():
        warnings.simplefilter("error", StrategySettingsWarning)  # none at the recommended settings
        model = trainer.train(train_df)
    if trainer.members:  # the ensemble predicts with the mean of its members
        probs = np.mean([mlp_probs(member_weights(m), data.x_test) for m in trainer.members], axis=0)
    else:
        probs = mlp_probs(model.get_weights(), data.x_test)
    acc = accuracy(probs, data.y_test)
    record_property("test_accuracy", acc)
    assert acc >= MIN_ACCURACY, f"{name} with {workers} workers at its recommended settings: {acc:.3f}"
