"""Training on partitions several times the feed budget, through a real local Spark run: the
workers spill to local disk and train from there as well as from memory; a failing worker
leaves no spill file; validation uses a bounded sample."""

from __future__ import annotations

import functools
import os
import re

import numpy as np
import pytest

from tests.training import accuracy, make_mlp, mlp_probs, trainer_kwargs

BUDGET = "200KB"  # each worker's partition: 2,874 digits rows of 260 bytes = 747 KB, 3.7x the budget


@pytest.fixture(scope="module")
def repeated(digits):
    """The digits' training rows four times over (5,748 rows), cached."""
    train_df, test_df, data = digits
    df = functools.reduce(lambda a, b: a.union(b), [train_df] * 4).cache()
    assert df.count() == 4 * len(data.x_train)
    yield df, test_df, data
    df.unpersist()


def _train(trainer_cls, df, test_df, **kwargs):
    kwargs = trainer_kwargs(num_workers=2, num_epoch=2, **kwargs)
    if trainer_cls.strategy_name == "single":
        kwargs.pop("num_workers")
    trainer = trainer_cls(make_mlp(), **kwargs)
    model = trainer.train(df, validation=test_df, validation_rows=100)
    return model, trainer.history


@pytest.mark.slow
def test_spilled_partitions_train_as_well_as_in_memory(repeated):
    from distkeras.frontends.trainers import DOWNPOUR

    df, test_df, data = repeated
    results = {}
    for name, feed in (("memory", "auto"), ("spilled", BUDGET)):
        model, history = _train(DOWNPOUR, df, test_df, feed_memory=feed)
        feeds = [w["feed"] for w in history.workers]
        assert [f["feed"] for f in feeds] == [name, name]
        if name == "spilled":
            assert all(f["spilled_bytes"] > 3 * 200_000 and f["blocks"] >= 7 for f in feeds), feeds
        samples = sum(c["samples"] for c in history.commits)
        assert samples == 2 * 2 * (sum(f["rows"] for f in feeds) // 2 // 16) * 16  # every batch of 2 epochs
        assert history.validation == {"rows": 100, "max_rows": 100} and len(history.epochs) == 2
        results[name] = accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test)
    assert results["memory"] >= 0.9 and results["spilled"] >= 0.9, results
    assert abs(results["memory"] - results["spilled"]) <= 0.03, results


@pytest.mark.slow
def test_a_single_worker_trains_whole_epochs_from_spill_files(repeated):
    from distkeras.frontends.trainers import SingleTrainer

    df, test_df, data = repeated
    # one worker training on the whole set: an epoch is one window, trained in parts of at most
    # max_window batches from the spill files training on the whole set: an epoch is one window, trained in parts of at most
    # max_window batches from the spill files
    model, history = _train(SingleTrainer, df, test_df, feed_memory=BUDGET)
    (worker,) = history.workers
    assert worker["feed"]["feed"] == "spilled" and worker["rows"] == 4 * len(data.x_train)
    assert [c["samples"] for c in history.commits] == [worker["batches_per_epoch"] * 16] * 2
    assert accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test) >= 0.9


def _fail_mid_training(worker, attempt, source):
    batches = source.batches(16, 1, 0, worker)
    next(batches)
    raise RuntimeError(f"injected failure while training from {source.kind} {getattr(source, 'directory', '')}")


def _open_spill_files(directory: str) -> list[str]:
    """Every open file descriptor of any process here that points into ``directory``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(directory):
                found.append(f"{pid}: {target}")
    return found


@pytest.mark.slow
def test_a_failing_worker_leaves_no_spill_file(repeated):
    from distkeras.spark.errors import WorkerError
    from distkeras.spark.tasks import run_workers

    df, _, _ = repeated
    with pytest.raises(WorkerError) as info:
        run_workers(df, _fail_mid_training, 2, feed=200_000)
    match = re.search(r"training from spilled (\S+)", str(info.value))
    assert match, str(info.value)
    directory = match.group(1)
    assert "distkeras-spill-w" in directory
    assert not os.path.exists(directory)
    assert _open_spill_files(directory) == []
