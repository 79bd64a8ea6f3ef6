"""The Spark runner end to end: task retries with fencing, worker errors, too few slots, a real
standalone cluster, the service always stopped, Arrow predict/evaluate; and the worker's own
parts without Spark (exchanges against the real parameter server, adapter reuse across tasks,
a run's short last window)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import run_json_script
from tests.training import WORKERS, accuracy, make_mlp, member_weights, mlp_probs, optimizer, trainer_kwargs


# --- the worker's parts, no Spark --------------------------------------------------------------


SECRET = b"test-runner-secret-0123456789"


@pytest.mark.parametrize("name", ["aeasgd", "eamsgd", "downpour", "adag", "dynsgd", "experimental", "easgd"])
def test_exchange_commits_against_the_right_center(name):
    """One exchange of worker 0 through the real parameter server and client, after worker 1 moved
    the center from 0 (what worker 0 started its window from) to 2. Elastic averaging
    (asynchronous) computes e = α(w − c) against the center read just before the commit (Zhang et
    al., Algorithm 1); the DOWNPOUR family commits w − (the center its window started from) and
    gets the center back in the same round trip; synchronous EASGD waits for the round and needs
    no extra pull (nobody moves the center between rounds). The server applies each payload by
    its strategy's rule; the history's norms give the payload's scale."""
    from distkeras.core.strategies import get_strategy
    from distkeras.ps import PSClient, ParameterServerService
    from distkeras.spark.worker import exchange

    s = get_strategy(name)
    n = 4
    local = np.full(n, 1.0, np.float32)  # worker 0 after its window
    with ParameterServerService(s, np.zeros(n, np.float32), 2, SECRET) as svc:
        host, port = svc.address
        mine, other = PSClient(host, port, SECRET, 0), PSClient(host, port, SECRET, 1)
        pulled, _ = mine.pull()  # worker 0 starts its window from 0
        other.pull()
        done = threading.Thread(target=other.commit, args=(np.full(n, 2.0, np.float32),), kwargs={"pull": False}, daemon=True)
        done.start()  # asynchronous: applied at once; synchronous: waits for worker 0's commit
        if not s.synchronous:
            done.join(10)
            np.testing.assert_array_equal(svc.center(), np.full(n, 2.0, np.float32))
        wstate, new_local, new_pulled, info = exchange(s, mine, s.init_worker(pulled), local.copy(), pulled, samples=16)
        done.join(10)
        assert not done.is_alive()
        stats = svc.stats()
        center = svc.center()
        mine.close(), other.close()
    w0 = stats["workers"]["0"]
    assert w0["commits"] == 1 and w0["samples"] == 16 and info["status"] == "applied"
    if name in ("aeasgd", "eamsgd"):
        e = s.alpha * (local - 2.0)  # against the center now, not the one the window started from
        np.testing.assert_allclose(center, 2.0 + e)
        np.testing.assert_allclose(new_local, local - e)  # the worker moves towards the center
        np.testing.assert_allclose(new_pulled, np.full(n, 2.0))  # ... and keeps its weights
        assert stats["pulls"] == 3  # the extra pull right before the commit
        assert info["update_norm"] == pytest.approx(s.alpha * info["delta_norm"], rel=1e-6)
        return
    assert stats["pulls"] == 2 + 1  # the initial pulls and the center in the commit's reply: no extra pull
    np.testing.assert_array_equal(new_pulled, center)  # the reply's center is the server's
    if name == "easgd":
        e = s.alpha * (local - pulled)  # against the center of the last round
        np.testing.assert_allclose(center, 0.0 + e + 2.0)  # one round of both elastic differences
        np.testing.assert_allclose(new_local, local - e)
        assert stats["round"] == 1 and info["staleness"] == 0
        return
    np.testing.assert_array_equal(new_local, center)  # the DOWNPOUR family takes the center
    delta = local - pulled
    if name == "downpour":
        applied = delta
    elif name == "adag":
        applied = delta / s.window
    elif name == "dynsgd":
        applied = delta / 2  # staleness 1: worker 1 committed since worker 0 pulled
    else:  # experimental: Δ/λ damped where the center moved (by 2) since worker 0 pulled
        applied = (delta / s.window) / ((2.0 - 0.0) ** 2 / s.learning_rate + 1)
    np.testing.assert_allclose(center, 2.0 + applied, rtol=1e-6)
    assert info["staleness"] == 1 and w0["staleness_last"] == 1
    scale = 1.0 if name in ("downpour", "dynsgd") else 1.0 / s.window
    assert info["update_norm"] == pytest.approx(scale * info["delta_norm"], rel=1e-6)


@pytest.mark.parametrize("name", ["adag", "localsgd"])
def test_a_rejected_commit_fails_the_worker_naming_the_reason(name):
    """run_worker runs the one worker loop (core.worker_loop) against the real service: a window
    that turns the weights NaN (a poisoned batch) is rejected by the server, and the worker
    fails at once with the server's reason (the Spark task fails; the simulator ends its run
    the same way). The center is unchanged and nothing after the rejection was sent."""
    import base64

    from distkeras.backends import ModelSpec
    from distkeras.core.server import CommitRejected
    from distkeras.core.strategies import get_strategy
    from distkeras.data import load_digits
    from distkeras.ps import ParameterServerService, PSCommitRejected
    from distkeras.spark.source import ArraySource
    from distkeras.spark.worker import WorkerConfig, encode_vector, run_worker

    x, y = load_digits("train")
    x, y = x[:128].copy(), y[:128]
    x[:, 3] = np.nan  # every batch: the first window's weights turn NaN
    spec = ModelSpec.from_model(make_mlp(), optimizer(), "sparse_categorical_crossentropy", ["accuracy"])
    strategy = get_strategy(name, window=2)
    with ParameterServerService(strategy, spec.weights.copy(), 1, SECRET) as svc:
        host, port = svc.address
        config = WorkerConfig(
            spec_json=spec.to_json(), strategy=name, strategy_params=strategy.params(), batch_size=16, epochs=1,
            ps_addresses=f"{host}:{port}", secret_b64=base64.b64encode(SECRET).decode(), initial_b64=encode_vector(spec.weights),
        )
        with pytest.raises(PSCommitRejected, match=r"commit 0 of worker 0 rejected: the update contains NaN or Inf values; the center is unchanged") as e:
            run_worker(config, 0, 0, ArraySource.of(x, y))
        stats = svc.stats()
        np.testing.assert_array_equal(svc.center(), spec.weights)
    assert isinstance(e.value, CommitRejected) and e.value.reason == "non_finite"
    assert stats["rejected"] == {"non_finite": 1} and stats["commits_applied"] == 0 and stats["pulls"] == 1


def test_cached_adapter_restarts_runs_like_a_fresh_model():
    """A Python worker reuses its built model and compiled window functions for the next task of the
    same spec (the optimizer's name aside), with the optimizer state back to fresh: the second run
    trains exactly like the first. A run's short last window equals one window of those steps."""
    from distkeras.backends import KerasAdapter, ModelSpec
    from distkeras.data import load_digits
    from distkeras.spark.worker import cached_adapter, train_window

    x, y = load_digits("train")
    xs, ys = x[: 12 * 16].reshape(12, 16, 64), y[: 12 * 16].reshape(12, 16)
    spec = ModelSpec.from_model(make_mlp(), optimizer(), "sparse_categorical_crossentropy", ["accuracy"])
    start = spec.weights.copy()

    def run(adapter):
        adapter.set_flat(start)
        m1, _ = train_window(adapter, [(xs, ys)], 12)
        m2, _ = train_window(adapter, [(xs, ys)], 12)
        return adapter.get_flat(), m1, m2

    first = cached_adapter(spec)
    v1, a1, b1 = run(first)
    again = ModelSpec.from_model(make_mlp(), optimizer(), "sparse_categorical_crossentropy", ["accuracy"])  # adam_N
    second = cached_adapter(again)
    assert second is first
    v2, a2, b2 = run(second)
    np.testing.assert_array_equal(v1, v2)
    assert (a1, b1) == (a2, b2) and a1["loss"] > b1["loss"]
    assert int(np.asarray(first.model.optimizer.iterations)) == 24
    # a short last window (5 of 12 batches) runs as one-step windows: same steps as one window
    short = cached_adapter(spec)
    short.set_flat(start)
    m_short, trained = train_window(short, [(xs[:5], ys[:5])], 12)
    assert trained == 5
    v_short = short.get_flat()
    fresh = KerasAdapter.from_spec(spec.with_weights(start))
    m_one = fresh.train_window(xs[:5], ys[:5])
    np.testing.assert_allclose(v_short, fresh.get_flat(), rtol=1e-5, atol=1e-6)
    assert m_short["loss"] == pytest.approx(m_one["loss"], rel=1e-4)
    assert m_short["accuracy"] == pytest.approx(m_one["accuracy"], abs=1e-6)


# --- the runner's failure paths with a real parameter server, no Spark --------------------------


class _FakeSpec:
    weights = np.zeros(10, np.float32)

    def to_json(self):
        return "{}"


class _FakeFrame:
    def count(self):
        return 64


def _run_without_spark(monkeypatch, services: list, strategy: str, worker_fn_body, **options):
    """run_training with the feed and the Spark task launcher replaced: every worker runs
    ``worker_fn_body(config, worker, attempt)`` in a thread of this process (against the real
    parameter server the runner starts), and a worker's exception becomes a WorkerError as in
    tasks.run_workers. Returns run_training's result; the services it started go to ``services``."""
    from distkeras import ps
    from distkeras.core.strategies import get_strategy
    from distkeras.spark import feed, runner, tasks
    from distkeras.spark.errors import WorkerError

    real_serve = ps.serve
    monkeypatch.setattr(ps, "serve", lambda *a, **k: services.append(real_serve(*a, **k)) or services[-1])
    monkeypatch.setattr(feed, "prepare", lambda df, *a, **k: (_FakeFrame(), None))
    monkeypatch.setattr(runner, "run_worker", lambda config, w, a, source: worker_fn_body(config, w, a))

    def run_workers(df, worker_fn, num_workers, **kwargs):
        outs = [{} for _ in range(num_workers)]

        def one(w):
            try:
                outs[w]["summary"] = worker_fn(w, 0, None)
            except Exception as exc:
                outs[w]["error"] = WorkerError(w, 0, type(exc).__qualname__, str(exc), "")

        threads = [threading.Thread(target=one, args=(w,), daemon=True) for w in range(num_workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a worker still runs"
        for out in outs:
            if "error" in out:
                raise out["error"]
        return [out["summary"] for out in outs]

    monkeypatch.setattr(tasks, "run_workers", run_workers)
    opts = runner.RunOptions(progress=False, batch_size=4, **options)
    return runner.run_training(_FakeSpec(), None, get_strategy(strategy), opts, features_col="f", label_col="l", spark=object())


def _ps_client(config, worker, attempt):
    import base64

    from distkeras.ps.client import connect

    return connect(config.ps_addresses, base64.b64decode(config.secret_b64), worker, attempt, retry_timeout=10, timeout=config.request_timeout)


def test_a_hung_worker_fails_the_run_naming_it_after_the_round_timeout(monkeypatch):
    """Synchronous run, worker 1 hangs before its first commit: worker 0's round wait ends after
    round_timeout with an error naming worker 1, which fails the run (not a wait forever)."""
    from distkeras.spark.errors import WorkerError

    release = threading.Event()
    seen = {}

    def body(config, worker, attempt):
        seen["request_timeout"] = config.request_timeout
        client = _ps_client(config, worker, attempt)
        try:
            if worker == 1:
                release.wait(30)  # hangs (a stuck data read, a deadlocked GPU, ...)
                return {"worker": worker}
            client.commit(np.ones(10, np.float32), samples=4)
            return {"worker": worker}
        finally:
            if worker == 0:
                release.set()
            client.close()

    t0 = time.monotonic()
    services: list = []
    with pytest.raises(WorkerError) as e:
        _run_without_spark(monkeypatch, services, "localsgd", body, num_workers=2, round_timeout=1.0)
    assert time.monotonic() - t0 < 20
    assert e.value.worker_id == 0 and e.value.exc_type == "PSRemoteError"
    assert "round 0 did not close within 1s: still waiting for worker 1 (attempt 0), which did not commit to it" in str(e.value)
    assert seen["request_timeout"] == 61.0  # the worker's reply wait outlasts the server's round wait
    (service,) = services
    assert service.round_timeout == 1.0 and service._stopped


def test_round_timeout_default_and_bad_values(monkeypatch):
    from distkeras.spark.runner import RunOptions

    assert RunOptions().round_timeout == 600.0
    with pytest.raises(ValueError, match="round_timeout must be > 0 seconds or None, got 0"):
        _run_without_spark(monkeypatch, [], "localsgd", lambda *a: {}, round_timeout=0)


def test_worker_error_stays_the_error_when_the_final_checkpoint_also_fails(monkeypatch, tmp_path):
    from distkeras.spark.errors import WorkerError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    url = str(blocker / "ckpt")

    def body(config, worker, attempt):
        client = _ps_client(config, worker, attempt)
        try:
            client.commit(np.ones(10, np.float32), samples=4)
            if worker == 1:
                raise ValueError("worker 1 found a corrupt shard (injected)")
            return {"worker": worker}
        finally:
            client.close()

    services: list = []
    with pytest.raises(WorkerError, match="worker 1 found a corrupt shard") as e:
        _run_without_spark(monkeypatch, services, "adag", body, num_workers=2, checkpoint=url)
    notes = "\n".join(getattr(e.value, "__notes__", []))
    assert "stopping the parameter server failed: CheckpointError" in notes and f"{url}/shard-00.npz" in notes
    (service,) = services
    assert service._stopped and _refused(service.address)


def test_a_checkpoint_failure_after_a_successful_training_is_a_clear_error(monkeypatch, tmp_path):
    from distkeras.ps import CheckpointError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    url = str(blocker / "ckpt")

    def body(config, worker, attempt):
        client = _ps_client(config, worker, attempt)
        try:
            client.commit(np.ones(10, np.float32), samples=4)
            return {"worker": worker}
        finally:
            client.close()

    with pytest.raises(CheckpointError, match=rf"the training finished, but its final checkpoint could not be written .*{url}/shard-00\.npz") as e:
        _run_without_spark(monkeypatch, [], "adag", body, num_workers=2, checkpoint=url)
    np.testing.assert_array_equal(e.value.center, np.full(10, 2, np.float32))  # both commits, on the error


def _refused(address) -> bool:
    try:
        socket.create_connection(tuple(address), timeout=2).close()
    except OSError:
        return True
    return False


# --- Spark -------------------------------------------------------------------------------------


@pytest.fixture
def services(monkeypatch):
    """Every parameter-server service the runner starts during the test."""
    import distkeras.ps as ps

    started = []
    real_serve = ps.serve

    def serve(*args, **kwargs):
        service = real_serve(*args, **kwargs)
        started.append(service)
        return service

    monkeypatch.setattr(ps, "serve", serve)
    return started


def _assert_stopped(service) -> None:
    host, port = service.address
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()
    assert not [t for t in threading.enumerate() if t.name == "distkeras-monitor" and t.is_alive()]


@pytest.mark.slow
def test_task_retry_fences_the_failed_attempt(spark, digits, monkeypatch, services):
    """Worker 1's first attempt fails after 3 acknowledged commits; Spark (local[4,2]) retries it.
    Its commits were applied once, the retry fences the old attempt off (a zombie connection of
    that attempt sends a late commit: refused), and training completes."""
    from distkeras.frontends.trainers import ADAG
    from distkeras.spark import runner
    from tests.spark import _runner_workers as rw

    monkeypatch.setattr(runner, "run_worker", rw.run_worker_failing_once)
    train_df, _, data = digits
    trainer = ADAG(make_mlp(), **trainer_kwargs(spark=spark))
    model = trainer.train(train_df)
    h = trainer.history
    assert [(w["worker"], w["attempt"]) for w in h.workers] == [(0, 0), (1, 1), (2, 0), (3, 0)]
    recorded = len(h.commits)  # the successful attempts' commits, as their workers recorded them
    s = h.server
    assert s["commits_applied"] == recorded + rw.ACKED_BEFORE_FAILURE
    assert s["duplicates"] == 0
    assert s["rejected"].get("fenced", 0) >= 1 and s["rejected_total"] == s["rejected"]["fenced"]
    w1 = s["workers"]["1"]
    # the server fences by Spark's task attempt id: the retry's, larger than every first attempt's
    assert w1["attempt"] == h.workers[1]["fencing_attempt"] > max(w["fencing_attempt"] for w in h.workers if w["worker"] != 1)
    assert w1["commits"] == rw.ACKED_BEFORE_FAILURE + len([c for c in h.commits if c["worker"] == 1])
    assert accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test) >= 0.85  # no 1e3 commit got in
    _assert_stopped(services[0])


@pytest.mark.slow
def test_worker_error_reaches_the_driver_and_the_service_stops(spark, digits, monkeypatch, services):
    from distkeras.frontends.trainers import ADAG
    from distkeras.spark import runner
    from distkeras.spark.errors import WorkerError
    from tests.spark import _runner_workers as rw

    monkeypatch.setattr(runner, "run_worker", rw.run_worker_raising)
    train_df, _, _ = digits
    trainer = ADAG(make_mlp(), **trainer_kwargs(spark=spark, num_epoch=1))
    with pytest.raises(WorkerError) as info:
        trainer.train(train_df)
    err = info.value
    assert err.worker_id == 2 and err.exc_type == "ValueError" and err.attempt == 1  # after Spark's retry
    assert "worker 2 found a corrupt shard of" in str(err) and "(injected)" in err.worker_message
    assert "run_worker_raising" in err.worker_traceback
    (service,) = services
    _assert_stopped(service)


@pytest.mark.slow
def test_ps_host_and_ps_bind_reach_the_workers(spark, digits, services):
    """The server listens on ``ps_bind`` and the workers connect to ``ps_host`` (a name here)."""
    from distkeras.frontends.trainers import ADAG

    train_df, _, _ = digits
    trainer = ADAG(make_mlp(), **trainer_kwargs(spark=spark, num_epoch=1, ps_host="localhost", ps_bind="0.0.0.0"))
    trainer.train(train_df)
    (service,) = services
    assert service.address[0] == "localhost" and service.bound_address == ("0.0.0.0", service.address[1])
    s = trainer.history.server
    assert s["service"]["address"] == f"localhost:{service.address[1]}"
    assert s["commits_applied"] == len(trainer.history.commits) > 0


@pytest.mark.slow
def test_too_few_slots_for_a_synchronous_strategy(spark, digits, services):
    from distkeras.frontends.trainers import LocalSGD
    from distkeras.spark.errors import NotEnoughSlotsError

    train_df, _, _ = digits
    trainer = LocalSGD(make_mlp(), **trainer_kwargs(spark=spark, num_workers=8))
    t0 = time.monotonic()
    with pytest.raises(NotEnoughSlotsError, match=r"strategy localsgd is synchronous and needs 8 task slots at once; the cluster has 4"):
        trainer.train(train_df)
    assert time.monotonic() - t0 < 30
    (service,) = services
    _assert_stopped(service)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="checks executor JVMs through /proc")
def test_training_on_a_standalone_cluster(standalone_cluster):
    """ADAG with 2 workers against a real standalone master + worker on 127.0.0.1 (in a subprocess:
    one SparkContext per process): the workers run in an executor JVM, not the driver's."""
    out = run_json_script(Path(__file__).with_name("_standalone_train.py"), standalone_cluster.master_url)
    assert out["master"] == standalone_cluster.master_url
    assert [w["worker"] for w in out["workers"]] == [0, 1]
    for w in out["workers"]:
        assert w["backend"] == os.environ["KERAS_BACKEND"]
        assert w["pid"] != out["driver_pid"] and w["jvm"] is not None and w["jvm"] != out["driver_jvm"]
        assert w["commits"] > 0
    assert out["commits_applied"] == sum(w["commits"] for w in out["workers"])
    assert out["accuracy"] >= 0.85, out


@pytest.mark.slow
def test_predict_and_evaluate_through_arrow(spark, digits):
    import keras

    from distkeras.backends import ModelSpec
    from distkeras.backends.ensemble import build_ensemble
    from distkeras.spark.inference import evaluate, predict

    _, test_df, data = digits
    model = make_mlp(seed=3)
    model.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    out = predict(model, test_df).toArrow()
    assert out.column_names == ["features", "label", "prediction", "predicted_label"]
    x = np.asarray(out.column("features").to_pylist(), np.float32)
    got = np.asarray(out.column("prediction").to_pylist(), np.float32)
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert out.column("predicted_label").to_pylist() == want.argmax(axis=1).tolist()
    assert sorted(map(tuple, x.tolist())) == sorted(map(tuple, data.x_test.tolist()))  # every row once

    metrics = evaluate(model, test_df)
    loss, acc = model.evaluate(data.x_test, data.y_test, verbose=0)
    assert metrics["loss"] == pytest.approx(loss, abs=1e-4) and metrics["accuracy"] == pytest.approx(acc, abs=1e-4)

    # an ensemble (what EnsembleTrainer returns) predicts with the mean of its members' outputs
    spec = ModelSpec.from_model(make_mlp(), optimizer(), "sparse_categorical_crossentropy", ["accuracy"])
    members = [np.concatenate([w.ravel() for w in make_mlp(seed=10 + i).get_weights()]).astype(np.float32) for i in range(3)]
    ensemble = build_ensemble(spec, members)
    out = predict(ensemble, test_df).toArrow()
    x = np.asarray(out.column("features").to_pylist(), np.float32)
    mean = np.mean([mlp_probs(member_weights(m), x) for m in members], axis=0)
    np.testing.assert_allclose(np.asarray(out.column("prediction").to_pylist()), mean, rtol=1e-4, atol=1e-6)
    assert isinstance(ensemble, keras.Model)


@pytest.mark.slow
def test_repartition_false_takes_the_partitions_as_shards(spark, digits):
    """``repartition=False``: each worker trains on one partition as it is (no shuffle per run);
    a partition count other than num_workers is a clear error."""
    from pyspark.sql import functions as F

    from distkeras.frontends.trainers import ADAG

    train_df, _, data = digits
    df = train_df.repartition(WORKERS).cache()
    sizes = sorted(r[1] for r in df.groupBy(F.spark_partition_id()).count().collect())
    trainer = ADAG(make_mlp(), **trainer_kwargs(spark=spark, repartition=False))
    model = trainer.train(df)
    assert sorted(w["rows"] for w in trainer.history.workers) == sizes
    assert accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test) >= 0.85
    with pytest.raises(ValueError, match=f"repartition=False, but the DataFrame has {WORKERS} partitions for 3 workers"):
        ADAG(make_mlp(), **trainer_kwargs(spark=spark, repartition=False, num_workers=3)).train(df)
    df.unpersist()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
def test_workers_train_under_sched_batch_unless_turned_off(spark, digits, monkeypatch):
    """Each worker trains with its threads under SCHED_BATCH (its summary says so; that the
    threads get their policy back is tests/spark/test_cpu_policy.py's), and
    DISTKERAS_BATCH_SCHEDULING=0 on the driver turns it off for the run."""
    from distkeras.frontends.trainers import DOWNPOUR

    train_df, _, _ = digits
    trainer = DOWNPOUR(make_mlp(), **trainer_kwargs(spark=spark, num_epoch=1))
    trainer.train(train_df)
    workers = trainer.history.workers
    assert [w["cpu_policy"]["policy"] for w in workers] == ["batch"] * WORKERS
    assert all(w["cpu_policy"]["threads"] >= 1 for w in workers)

    monkeypatch.setenv("DISTKERAS_BATCH_SCHEDULING", "0")
    trainer = DOWNPOUR(make_mlp(), **trainer_kwargs(spark=spark, num_epoch=1))
    trainer.train(train_df)
    assert [w["cpu_policy"]["policy"] for w in trainer.history.workers] == ["unchanged"] * WORKERS
