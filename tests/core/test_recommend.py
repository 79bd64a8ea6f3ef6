"""The recommended settings and the warnings of distkeras.core.recommend (pure: no Keras, no Spark)."""

from __future__ import annotations

import json

import pytest

from distkeras.core import recommend
from distkeras.core.recommend import (
    STALENESS_BUDGET,
    optimizer_settings,
    recommendation,
    recommended,
    recommended_all,
    settings_notes,
)
from distkeras.core.strategies import STRATEGIES, get_strategy

WORKERS = (1, 2, 3, 4, 8, 16, 40)


def strategy_of(name: str, kwargs: dict):
    """The strategy a trainer builds from these keyword arguments (the class's spelling)."""
    params = {k: v for k, v in kwargs.items() if k in get_strategy(name).params()}
    if "communication_window" in kwargs:
        params["window"] = kwargs["communication_window"]
    return get_strategy(name, **params)


@pytest.mark.parametrize("optimizer", recommend.OPTIMIZERS)
@pytest.mark.parametrize("workers", WORKERS)
def test_every_recommendation_builds_its_strategy_and_is_json(workers, optimizer):
    table = recommended_all(workers, optimizer)
    assert list(table) == list(STRATEGIES)
    assert json.loads(json.dumps(table)) == table
    for name, kwargs in table.items():
        strategy = strategy_of(name, kwargs)  # valid hyperparameters (alpha <= 1, window >= 1)
        opt = kwargs["worker_optimizer"]
        assert opt["class_name"] in ("Adam", "SGD") and opt["config"]["learning_rate"] > 0
        assert kwargs["batch_size"] == recommend.BATCH_SIZE and kwargs["num_epoch"] == recommend.EPOCHS
        if name == "single":
            assert "num_workers" not in kwargs and "communication_window" not in kwargs
        elif name == "ensemble":
            assert kwargs["num_ensembles"] == workers and "communication_window" not in kwargs
        else:
            assert kwargs["num_workers"] == workers and kwargs["communication_window"] == strategy.window
        if name in ("aeasgd", "eamsgd", "easgd"):  # beta = p * alpha = 0.9, learning_rate = the workers' own rate
            assert workers * strategy.alpha == pytest.approx(recommend.ELASTIC_BETA)
            assert kwargs["learning_rate"] == opt["config"]["learning_rate"]
        if name == "eamsgd":  # its workers run SGD with Nesterov momentum whatever was asked for
            assert opt["class_name"] == "SGD"


@pytest.mark.parametrize("optimizer", recommend.OPTIMIZERS)
@pytest.mark.parametrize("workers", WORKERS)
def test_no_note_at_the_recommended_settings(workers, optimizer):
    for name in STRATEGIES:
        rec = recommendation(name, workers, optimizer)
        strategy = strategy_of(name, rec.kwargs())
        notes = settings_notes(strategy, rec.workers, epochs=rec.epochs, batch_size=rec.batch_size, optimizer=rec.optimizer, learning_rate=rec.learning_rate)
        assert notes == [], (name, workers, notes)


def test_downpour_stays_within_the_staleness_budget():
    for n in range(1, 65):
        rec = recommendation("downpour", n, "adam")
        assert (n - 1) * rec.window * rec.learning_rate / recommend.ADAM_LR <= STALENESS_BUDGET + 1e-9
    assert recommendation("downpour", 2, "adam").window == 5  # dist-keras's default where it fits
    assert recommendation("downpour", 40, "sgd").window == 1


def test_the_issues_adag_run_warns_with_its_number():
    """Keras's default Adam (0.001), batch 32, 10 epochs, ADAG's default window 12, 4 workers:
    0.35 test accuracy measured; the note says how far the center travels and what to use."""
    (note,) = settings_notes(get_strategy("adag"), 4, epochs=10, batch_size=32, optimizer="adam", learning_rate=0.001)
    assert "1/12" in note and "0.017 of" in note and "window 4 with adam learning rate 0.01" in note
    # more epochs or a larger rate bring it back within reach
    assert settings_notes(get_strategy("adag"), 4, epochs=20, batch_size=16, optimizer="adam", learning_rate=0.005) == []


def test_slow_and_unstable_regimes_warn():
    # EASGD's defaults (alpha = 0.05, window 32) with 4 workers: beta = 0.2 (0.683 measured)
    (note,) = settings_notes(get_strategy("easgd"), 4, optimizer="adam", learning_rate=0.001)
    assert "beta=p*alpha=0.2" in note and "window 4" in note and "alpha=0.9/p=0.225" in note
    # EASGD with beta > 1: the center overshoots the workers' mean
    notes = settings_notes(get_strategy("easgd", window=4, rho=50.0, learning_rate=0.01), 4)
    assert len(notes) == 1 and "beta=p*alpha=2 > 1" in notes[0]
    # DOWNPOUR: Adam 0.01 with 4 workers (0.74-0.80 measured), its defaults with 8 workers
    (note,) = settings_notes(get_strategy("downpour"), 4, optimizer="adam", learning_rate=0.01)
    assert "= 30 base steps" in note and "window 2, learning rate 0.005" in note
    (note,) = settings_notes(get_strategy("downpour"), 8, optimizer="sgd", learning_rate=0.1)
    assert "= 35 base steps" in note and "window 1" in note
    # within twice the budget: no note (DOWNPOUR's defaults at Adam 0.005 with 4 workers: 15)
    assert settings_notes(get_strategy("downpour"), 4, optimizer="adam", learning_rate=0.005) == []


def test_rules_that_need_a_learning_rate_are_skipped_without_one():
    assert settings_notes(get_strategy("adag"), 4, epochs=1, batch_size=512, optimizer="adam", learning_rate=None) == []
    assert settings_notes(get_strategy("downpour"), 40, optimizer="adagrad", learning_rate=0.1) == []


def test_optimizer_settings():
    assert optimizer_settings("adam") == ("adam", 0.001)
    assert optimizer_settings("SGD") == ("sgd", 0.01)
    assert optimizer_settings("adagrad") == ("adagrad", None)
    assert optimizer_settings({"class_name": "Adam", "config": {"learning_rate": 0.005, "beta_1": 0.9}}) == ("adam", 0.005)
    schedule = {"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1}}
    assert optimizer_settings({"class_name": "SGD", "config": {"learning_rate": schedule}}) == ("sgd", None)
    assert optimizer_settings(None) == (None, None)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown strategy 'hogwild'"):
        recommended("hogwild", 4)
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        recommended("adag", 0)
    with pytest.raises(ValueError, match="optimizer must be one of adam, sgd, got 'rmsprop'"):
        recommended("adag", 4, "rmsprop")


def test_simulators_stability_note_is_the_elastic_rule():
    from distkeras.core.simulate import stability_note

    easgd = get_strategy("easgd", rho=90.0, learning_rate=0.01)
    assert stability_note(easgd, 4) == recommend.elastic_note(easgd, 4) is not None
