"""distkeras.spark.cpu_policy: the worker's threads under SCHED_BATCH while it trains, and
their policy given back afterwards (the Python worker process is reused by later tasks)."""

from __future__ import annotations

import os
import threading

import pytest

from distkeras.spark.cpu_policy import ENV_BATCH_SCHEDULING, batch_scheduling, batch_scheduling_default

linux = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH") or not os.path.isdir("/proc/self/task"), reason="SCHED_BATCH is Linux's")


def policies() -> dict[int, int]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            out[int(tid)] = os.sched_getscheduler(int(tid))
        except ProcessLookupError:
            pass
    return out


class Parked(threading.Thread):
    """A thread that reports its own policy on request and then waits again."""

    def __init__(self):
        super().__init__(daemon=True)
        self.ask, self.told, self.stop = threading.Event(), threading.Event(), False
        self.policy = None

    def run(self):
        while True:
            self.ask.wait()
            self.ask.clear()
            if self.stop:
                return
            self.policy = os.sched_getscheduler(0)
            self.told.set()

    def current(self) -> int:
        self.told.clear()
        self.ask.set()
        assert self.told.wait(10)
        return self.policy

    def end(self):
        self.stop = True
        self.ask.set()
        self.join(10)


@linux
def test_every_thread_is_batch_inside_and_gets_its_policy_back():
    before = Parked()
    before.start()
    already_batch = Parked()
    already_batch.start()
    already_batch_tid = already_batch.native_id
    os.sched_setscheduler(already_batch_tid, os.SCHED_BATCH, os.sched_param(0))
    try:
        assert os.sched_getscheduler(0) == os.SCHED_OTHER and before.current() == os.SCHED_OTHER
        with batch_scheduling(True) as record:
            inside = Parked()  # started inside: inherits the starting thread's policy
            inside.start()
            assert record["policy"] == "batch"
            assert record["threads"] >= 2  # this thread and `before` at least (not the one already batch)
            assert set(policies().values()) == {os.SCHED_BATCH}
            assert before.current() == inside.current() == os.SCHED_BATCH
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        assert before.current() == os.SCHED_OTHER
        assert inside.current() == os.SCHED_OTHER  # a thread born inside gets the process's old policy
        assert already_batch.current() == os.SCHED_BATCH  # it was batch before: left as it was
        inside.end()
    finally:
        os.sched_setscheduler(already_batch_tid, os.SCHED_OTHER, os.sched_param(0))
        before.end()
        already_batch.end()


@linux
def test_the_policy_comes_back_when_training_fails():
    with pytest.raises(RuntimeError, match="worker failed"):
        with batch_scheduling(True):
            assert os.sched_getscheduler(0) == os.SCHED_BATCH
            raise RuntimeError("worker failed")
    assert set(policies().values()) == {os.SCHED_OTHER}


@linux
def test_a_host_that_refuses_the_policy_trains_under_the_default_and_says_so(monkeypatch):
    real = os.sched_setscheduler
    calls = []

    def refuse_the_second(tid, policy, param):
        calls.append(tid)
        if len(calls) == 2:
            raise PermissionError(1, "Operation not permitted")
        real(tid, policy, param)

    helper = Parked()  # at least two threads, so that one is switched before the refusal
    helper.start()
    try:
        monkeypatch.setattr(os, "sched_setscheduler", refuse_the_second)
        with batch_scheduling(True) as record:
            assert set(policies().values()) == {os.SCHED_OTHER}  # the one switched was given back
        assert record == {"policy": "unchanged", "reason": "the host refused SCHED_BATCH: [Errno 1] Operation not permitted"}
    finally:
        monkeypatch.undo()
        helper.end()


def test_turned_off_changes_nothing():
    before = policies()
    with batch_scheduling(False) as record:
        assert policies() == before
    assert record == {"policy": "unchanged", "reason": f"turned off (batch_scheduling=False or {ENV_BATCH_SCHEDULING}=0)"}


@pytest.mark.parametrize("value, expected", [(None, True), ("", True), ("1", True), ("on", True), ("0", False), ("off", False), ("False", False), ("no", False)])
def test_the_default_follows_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(ENV_BATCH_SCHEDULING, raising=False)
    else:
        monkeypatch.setenv(ENV_BATCH_SCHEDULING, value)
    assert batch_scheduling_default() is expected


def test_a_bad_environment_value_is_named(monkeypatch):
    monkeypatch.setenv(ENV_BATCH_SCHEDULING, "sometimes")
    with pytest.raises(ValueError, match=r"DISTKERAS_BATCH_SCHEDULING='sometimes': use 1 \(on, the default\) or 0 \(off\)"):
        batch_scheduling_default()
