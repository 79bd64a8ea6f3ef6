"""Issue 13 in the runner, with a real parameter server and the Spark tasks replaced by threads
(tests/spark/test_runner.py's harness): one record per epoch, and a stop asked by ``on_epoch``
that reaches asynchronous and synchronous workers (the same round for all)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from distkeras.spark.worker import should_stop
from tests.spark.test_runner import _ps_client, _run_without_spark

EPOCHS = 40  # 64 rows, batch 4, 2 workers: 64 samples an epoch, 2560 in all


def _body(synchronous: bool, pause: float):
    def body(config, worker, attempt):
        client = _ps_client(config, worker, attempt)
        committed, commits, stopped = -1, 0, False
        try:
            client.pull()
            for _ in range(config.epochs * 8):  # 32 rows, batch 4: 8 commits an epoch
                if should_stop(client.stop_signal, synchronous, committed):
                    stopped = True
                    break
                time.sleep(pause)
                _, info = client.commit(np.full(10, 0.01, np.float32), samples=4, pull=True)
                committed, commits = info["round"], commits + 1
            client.bye()
        finally:
            client.close()
        return {"worker": worker, "commits": commits, "stopped": stopped}

    return body


@pytest.mark.parametrize("strategy", ["adag", "localsgd"])
def test_every_epoch_is_recorded_and_a_stop_reaches_every_worker(monkeypatch, strategy):
    synchronous = strategy == "localsgd"
    seen = []

    def on_epoch(record, center):
        seen.append((record["epoch"], record["samples"], float(center[0])))
        return record["epoch"] == 3

    services: list = []
    from distkeras.spark import runner

    real = runner.run_training

    def with_hooks(*args, **kwargs):
        return real(*args, evaluate_center=lambda c: {"loss": float(c[0])}, on_epoch=on_epoch, **kwargs)

    monkeypatch.setattr(runner, "run_training", with_hooks)
    result = _run_without_spark(monkeypatch, services, strategy, _body(synchronous, 0.005), num_workers=2, epochs=EPOCHS)
    h = result.history
    assert [e["epoch"] for e in h.epochs] == [1, 2, 3] and [s[0] for s in seen] == [1, 2, 3]
    assert [e["samples"] for e in h.epochs] == [s[1] for s in seen] and all(e["samples"] >= 64 * e["epoch"] for e in h.epochs)
    assert h.timings["stopped_after_epoch"] == 3
    (service,) = services
    assert service.stats()["samples"] < 64 * EPOCHS / 2  # stopped long before the end
    summaries = result.history.workers
    assert all(s["stopped"] for s in summaries)
    if synchronous:
        assert len({s["commits"] for s in summaries}) == 1  # every worker left after the same round


def test_a_run_faster_than_the_polling_still_records_every_epoch(monkeypatch):
    from distkeras.spark import runner

    real = runner.run_training
    monkeypatch.setattr(runner, "run_training", lambda *a, **k: real(*a, evaluate_center=lambda c: {"loss": float(c[0])}, **k))
    result = _run_without_spark(monkeypatch, [], "adag", _body(False, 0.0), num_workers=2, epochs=5)
    assert [e["epoch"] for e in result.history.epochs] == [1, 2, 3, 4, 5]
    assert [e["samples"] for e in result.history.epochs] == [64, 128, 192, 256, 320]
