"""distkeras.spark.keep_warm: after a run, the executors' Python workers are kept past Spark's
one-minute idle limit by empty keep-alive jobs, never while a run trains, until a deadline."""

from __future__ import annotations

import logging
import time

import pytest

pytest.importorskip("pyarrow")

from distkeras.spark import keep_warm  # noqa: E402
from tests.support import SessionWithConf, wait_for  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("value,seconds", [("", 600.0), ("0", 0.0), ("off", 0.0), ("No", 0.0), ("120", 120.0), (" 2.5 ", 2.5)])
def test_the_environment_sets_how_long_the_workers_are_kept(monkeypatch, value, seconds):
    monkeypatch.setenv(keep_warm.ENV_KEEP_WARM, value)
    assert keep_warm.keep_seconds_default() == seconds
    assert keep_warm.check_keep_seconds(None) == seconds
    assert keep_warm.check_keep_seconds(30) == 30.0  # the run's own value wins


@pytest.mark.parametrize("value", ["soon", "-5", "inf", "nan"])
def test_a_bad_environment_value_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(keep_warm.ENV_KEEP_WARM, value)
    with pytest.raises(ValueError, match=f"DISTKERAS_KEEP_WARM={value!r}: give the seconds"):
        keep_warm.keep_seconds_default()


@pytest.mark.parametrize("value", [-1, float("inf"), True, "60"])
def test_a_bad_run_value_is_refused(value):
    with pytest.raises(ValueError, match="keep_warm_s must be a number of seconds >= 0"):
        keep_warm.check_keep_seconds(value)


def test_sessions_that_keep_no_workers_say_why():
    def why(values):
        return keep_warm.why_not(SessionWithConf(values))

    assert why({}) is None
    assert why({"spark.python.worker.reuse": "true", "spark.dynamicAllocation.enabled": "false"}) is None
    assert "fresh Python worker" in why({"spark.python.worker.reuse": "False"})
    assert "GPUs" in why({"spark.executor.resource.gpu.amount": "1"})
    assert why({"spark.executor.resource.gpu.amount": "0"}) is None
    assert "dynamic allocation" in why({"spark.dynamicAllocation.enabled": "true"})


def test_keep_alive_jobs_run_only_while_idle_and_stop_at_the_deadline(spark):
    from distkeras.spark import warmup

    for handle in list(warmup._last.values()):  # the session's own warm-up job holds the task slots
        handle.wait(600)
    keeper = keep_warm.Keeper(spark, interval=0.3)
    try:
        keeper._ping()
        assert keeper.jobs == 1 and keeper.pids and all(pid > 0 for pid in keeper.pids)  # the Python workers it ran in
        with keeper.training(8.0):
            time.sleep(1.0)  # three intervals into a run: no keep-alive job competes with it
            assert keeper.jobs == 1 and keeper.warm()
        wait_for(lambda: keeper.jobs >= 3, 8.0)  # a job takes 0.4-1 s here
        assert keeper.warm()
        # 8 s after the run's end nothing is kept any more, and no job follows
        wait_for(lambda: not keeper._thread.is_alive(), 20.0)
        jobs = keeper.jobs
        time.sleep(0.8)
        assert keeper.jobs == jobs and keeper.status()["keeping"] is False and keeper.stopped is None
        # a later run starts keeping again
        with keeper.training(5.0):
            pass
        wait_for(lambda: keeper.jobs > jobs, 5.0)
    finally:
        keeper.stop()
    assert not keeper._thread.is_alive() and keeper.stopped == "stopped"


class _StoppedContext:
    _jsc = None  # what a stopped SparkContext has


class _StoppedSession:
    sparkContext = _StoppedContext()


class _FailingSession:
    class sparkContext:  # noqa: N801 - the attribute PySpark's session has
        _jsc = object()

        @staticmethod
        def setJobDescription(text):  # noqa: N802
            pass

    def range(self, *args):
        raise RuntimeError("executors lost")


def test_a_stopped_session_or_a_failed_job_ends_the_keeper(monkeypatch, caplog):
    monkeypatch.setattr(keep_warm, "_slots", lambda spark: 2)
    keeper = keep_warm.Keeper(_StoppedSession(), interval=0.05)
    with keeper.training(30.0):
        pass
    wait_for(lambda: keeper.stopped is not None, 5.0)
    assert keeper.stopped == "the Spark session stopped" and keeper.jobs == 0
    keeper._thread.join(5.0)
    assert not keeper._thread.is_alive()

    failing = keep_warm.Keeper(_FailingSession(), interval=0.05)
    with caplog.at_level(logging.WARNING, logger=keep_warm.__name__):
        with failing.training(30.0):
            pass
        wait_for(lambda: failing.stopped is not None, 5.0)
        failing._thread.join(5.0)
    assert failing.stopped == "a keep-alive job failed: RuntimeError: executors lost"
    assert "stops keeping the Python workers warm: a keep-alive job failed" in caplog.text
    # a stopped keeper keeps nothing after a later run either
    with failing.training(30.0):
        pass
    assert not failing._thread.is_alive() and failing.status()["keeping"] is False


def test_a_run_finds_the_last_runs_workers_after_sparks_idle_limit(spark, digits):
    """The user-level promise: a run that follows more than a minute of idleness trains in the
    Python workers of the run before (the same processes, the model already built), which Spark
    would have killed after 60 s (PythonWorkerFactory's fixed idle timeout)."""
    from distkeras.frontends.trainers import DOWNPOUR
    from tests.training import WORKERS, make_mlp, trainer_kwargs

    train_df, _, _ = digits
    old = keep_warm.keeper(spark)
    if old is not None:
        old.stop("a fresh keeper for this test")  # keep-alives of earlier tests' runs must not help
    before = DOWNPOUR(make_mlp(), **trainer_kwargs(spark=spark, num_epoch=1))
    before.train(train_df)  # warm workers for this model
    first = DOWNPOUR(make_mlp(), **trainer_kwargs(spark=spark, num_epoch=1))
    first.train(train_df)
    assert first.history.timings["keep_warm_s"] == keep_warm.DEFAULT_KEEP_S
    keeper = keep_warm.keeper(spark)
    assert keeper is not None and keeper is not old and keeper.status()["keeping"]
    time.sleep(keep_warm.SPARK_IDLE_LIMIT_S + 15.0)
    assert keeper.jobs >= 2, keeper.status()
    second = DOWNPOUR(make_mlp(), **trainer_kwargs(spark=spark, num_epoch=1))
    second.train(train_df)
    alive = {w["pid"] for w in before.history.workers + first.history.workers}
    assert {w["pid"] for w in second.history.workers} <= alive, (alive, second.history.workers, keeper.status())
    assert len(second.history.workers) == WORKERS
    assert all(w["build_seconds"] < 0.5 for w in second.history.workers), [w["build_seconds"] for w in second.history.workers]
