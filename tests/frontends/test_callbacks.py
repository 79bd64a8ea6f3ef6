"""Issue 13: one validation record per epoch however fast the run, and Keras callbacks on the
driver (EarlyStopping stopping the workers, ModelCheckpoint to an fsspec URL, CSVLogger,
TensorBoard), in the shared local Spark session on the bundled digits."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.training import accuracy, make_mlp, member_weights, mlp_probs, trainer_kwargs


def _train(spark, digits, name, *, callbacks=None, validation=True, **overrides):
    from distkeras.frontends import trainers

    train_df, test_df, _ = digits
    kwargs = trainer_kwargs(spark=spark, num_workers=2, num_epoch=5)
    kwargs.update(overrides)
    trainer = getattr(trainers, name)(make_mlp(), **kwargs)
    model = trainer.train(train_df, validation=test_df if validation else None, callbacks=callbacks)
    return trainer, model


@pytest.mark.slow
def test_a_fast_run_records_every_epoch_and_drives_file_callbacks(spark, digits, tmp_path, keras):
    """ADAG, 2 workers, 5 epochs (faster than the monitor's polling): 5 validation records, and
    ModelCheckpoint to memory://, CSVLogger and TensorBoard (when the tensorboard package is
    installed: Keras's TensorBoard callback needs it) see the 5 epochs."""
    import importlib.util

    import fsspec

    from distkeras.frontends.model_io import load_model

    _, _, data = digits
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(("begin", None))

        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, dict(logs), accuracy(mlp_probs(self.model.get_weights(), data.x_test), data.y_test)))

        def on_train_end(self, logs=None):
            seen.append(("end", None))

    callbacks = [
        Spy(),
        keras.callbacks.ModelCheckpoint("memory://issue13/ckpt-{epoch:02d}.keras"),
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
    ]
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(tmp_path / "tb"), write_graph=False))
    trainer, model = _train(spark, digits, "ADAG", callbacks=callbacks)
    h = trainer.history
    assert [e["epoch"] for e in h.epochs] == [1, 2, 3, 4, 5]
    samples = [e["samples"] for e in h.epochs]
    assert samples == sorted(samples) and len(set(samples)) == 5 and samples[-1] == h.server["samples"]
    # the callbacks: begin, one epoch_end per epoch with the center's val_ metrics, end
    assert seen[0] == ("begin", None) and seen[-1] == ("end", None)
    epochs = seen[1:-1]
    assert [e[0] for e in epochs] == [0, 1, 2, 3, 4]
    for (epoch, logs, acc), record in zip(epochs, h.epochs):
        assert logs["val_loss"] == pytest.approx(record["loss"]) and logs["val_accuracy"] == pytest.approx(record["accuracy"])
        assert acc == pytest.approx(record["accuracy"], abs=1e-6)  # the model held that epoch's center
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/issue13", detail=False)) == [f"ckpt-{i:02d}.keras" for i in range(1, 6)]
    last = load_model("memory://issue13/ckpt-05.keras")
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in last.get_weights()]), np.concatenate([w.ravel() for w in model.get_weights()]), atol=1e-6)
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4] and "val_accuracy" in rows[0]
    if tensorboard:
        assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["LocalSGD", "SingleTrainer", "EnsembleTrainer"])
def test_synchronous_and_serverless_runs_record_every_epoch(spark, digits, name):
    trainer, _ = _train(spark, digits, name, num_epoch=3)
    h = trainer.history
    assert [e["epoch"] for e in h.epochs] == [1, 2, 3]
    samples = [e["samples"] for e in h.epochs]
    assert samples == sorted(samples) and len(set(samples)) == 3
    if name != "LocalSGD":  # no server: the workers' mean training loss of each epoch comes along
        assert all(np.isfinite(e["train_loss"]) for e in h.epochs)


def _stopper(keras):
    # improves at epoch 0 only (min_delta is huge): stops at epoch index 1 (the second), keeps epoch 0's weights
    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=100.0, restore_best_weights=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ADAG", "LocalSGD"])
def test_early_stopping_stops_the_workers_and_restores_the_best_center(spark, digits, keras, name):
    """Slow workers (a commit every batch of 4, 300 epochs): the stop reaches them long before the end."""
    _, _, data = digits
    trainer, model = _train(spark, digits, name, callbacks=[_stopper(keras)], num_epoch=300, batch_size=4, window=1)
    h = trainer.history
    total = 2 * (len(data.y_train) // 2 // 4) * 4 * 300
    assert h.server["samples"] < total / 5, h.server["samples"]  # stopped early
    assert [e["epoch"] for e in h.epochs] == [1, 2] and h.timings["stopped_after_epoch"] == 2
    assert all(w["stopped"] for w in h.workers)
    if name == "LocalSGD":  # every worker left after the same round
        counts = {w["worker"]: sum(1 for c in h.commits if c["worker"] == w["worker"]) for w in h.workers}
        assert len(set(counts.values())) == 1 and h.server["round"] == next(iter(counts.values())), counts
    # restore_best_weights: the returned model holds epoch 1's center
    assert accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test) == pytest.approx(h.epochs[0]["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_early_stopping_without_a_server_returns_the_best_epoch(spark, digits, keras):
    _, _, data = digits
    trainer, model = _train(spark, digits, "EnsembleTrainer", callbacks=[_stopper(keras)], num_epoch=4)
    h = trainer.history
    assert [e["epoch"] for e in h.epochs] == [1, 2] and h.timings["stopped_after_epoch"] == 2
    mean = np.mean([member_weights(m)[0] for m in trainer.members], axis=0)
    assert mean.shape == (64, 64)


def test_the_progress_bar_ends_at_the_final_counts_of_a_run_faster_than_its_polling(capsys):
    from distkeras.spark.runner import _Monitor

    class FastService:
        def __init__(self):
            self.snaps = [{"epoch": k, "samples": 100 * k, "clock": k, "center": np.zeros(2, np.float32)} for k in (1, 2, 3)]

        def stats(self):
            return {"samples": 300, "commits_applied": 30, "rejected_total": 0}

        def take_epoch_snapshots(self):
            out, self.snaps = self.snaps, []
            return out

        def request_stop(self):
            raise AssertionError("not asked")

    seen = []
    monitor = _Monitor(FastService(), 300, True, "adag", lambda snap: seen.append(snap["epoch"]) or False)
    with monitor:
        pass  # the run ends before the first poll
    assert seen == [1, 2, 3]
    assert monitor._bar is None or monitor._bar.n == 300
    err = capsys.readouterr().err
    assert "300/300" in err


def test_callbacks_as_plain_data_for_the_estimator(keras):
    from distkeras.frontends.callbacks import callbacks_from_json, callbacks_to_json
    from distkeras.frontends.estimator import KerasEstimator

    given = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=2, restore_best_weights=True),
        {"class_name": "CSVLogger", "config": {"filename": "memory://logs/run.csv"}},
    ]
    text = callbacks_to_json(given)
    assert "pickle" not in text and json.loads(text)[0]["class_name"] == "EarlyStopping"
    stop, logger = callbacks_from_json(text)
    assert (stop.monitor, stop.patience, stop.restore_best_weights) == ("val_accuracy", 2, True)
    assert isinstance(logger, keras.callbacks.CSVLogger) and logger.filename == "memory://logs/run.csv"
    est = KerasEstimator(model=make_mlp(), callbacks=given, validationFraction=0.2)
    assert json.loads(est.getOrDefault(est.callbacks)) == json.loads(text)
    assert [type(c).__name__ for c in est.getCallbacks()] == ["EarlyStopping", "CSVLogger"]
    assert est.copy().getCallbacks()[0].patience == 2
    with pytest.raises(ValueError, match="unknown callback 'LambdaCallback'"):
        callbacks_from_json('[{"class_name": "LambdaCallback", "config": {}}]')
    with pytest.raises(TypeError, match="built-in keras.callbacks"):
        callbacks_to_json([type("Mine", (keras.callbacks.Callback,), {})()])


@pytest.mark.slow
def test_estimator_fit_runs_its_callbacks_on_a_held_out_share(spark, digits, tmp_path):
    from distkeras.frontends.estimator import KerasEstimator

    train_df, _, _ = digits
    log = tmp_path / "est.csv"
    est = KerasEstimator(
        model=make_mlp(), numWorkers=2, numEpochs=3, batchSize=16, optimizer="adam", metrics=["accuracy"],
        callbacks=[{"class_name": "CSVLogger", "config": {"filename": str(log)}}], validationFraction=0.2,
    )
    fitted = est.fit(train_df)
    assert [e["epoch"] for e in fitted.history.epochs] == [1, 2, 3]
    rows = list(csv.DictReader(log.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and "val_loss" in rows[0]
