"""Worker functions for test_runner.py's failure tests.

Each wraps :func:`distkeras.spark.worker.run_worker`; a test installs one as
``distkeras.spark.runner.run_worker`` (monkeypatch on the driver). The runner's task closure
refers to that global, so cloudpickle ships the wrapper by reference (this module) and the
executors import it from here: the runner, the worker and Spark run unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

from distkeras.ps import client as ps_client
from distkeras.spark import worker as W

FAILING_WORKER = 1
ACKED_BEFORE_FAILURE = 3
ZOMBIE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zombie_attempt.py")


class InjectedFailure(RuntimeError):
    pass


class _FailingClient:
    """The PS client of the attempt that fails. After ``ACKED_BEFORE_FAILURE`` acknowledged
    commits, it hands its connection's identity to a zombie process (which opens a connection
    as the same worker and attempt, then outlives the task: a task attempt Spark gave up on but
    that is still running), and the next commit raises, failing the task."""

    def __init__(self, real, addresses: str, secret: bytes):
        self.real = real
        self.addresses = addresses
        self.secret = secret
        self.acked = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def commit(self, update, **kwargs):
        if self.acked == ACKED_BEFORE_FAILURE:
            self._start_zombie()
            raise InjectedFailure(f"injected failure of worker {self.real.worker} attempt {self.real.attempt} after {self.acked} acknowledged commits")
        out = self.real.commit(update, **kwargs)
        self.acked += 1
        return out

    def _start_zombie(self) -> None:
        env = dict(os.environ)
        proc = subprocess.Popen(
            [sys.executable, ZOMBIE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, start_new_session=True,
        )
        hello = {"addresses": self.addresses, "secret": base64.b64encode(self.secret).decode(), "worker": self.real.worker, "attempt": self.real.attempt}
        proc.stdin.write(json.dumps(hello) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()  # the zombie is connected (registered as this attempt)
        if line.strip() != "connected":
            raise RuntimeError(f"the zombie attempt did not connect: {line!r}")


def run_worker_failing_once(config, worker, attempt, source):
    """Worker ``FAILING_WORKER``'s first attempt fails after some acknowledged commits, leaving a
    zombie connection behind; its retry trains normally, then waits (at most 60 s) until the
    server has refused the zombie's late commit, so that the test can count on it."""
    if worker != FAILING_WORKER:
        return W.run_worker(config, worker, attempt, source)
    if attempt == 0:
        real_connect = ps_client.connect

        def connect(addresses, secret, *args, **kwargs):
            return _FailingClient(real_connect(addresses, secret, *args, **kwargs), addresses, secret)

        ps_client.connect = connect  # run_worker imports connect from the module when it runs
        try:
            return W.run_worker(config, worker, attempt, source)
        finally:
            ps_client.connect = real_connect
    summary = W.run_worker(config, worker, attempt, source)
    client = ps_client.connect(config.ps_addresses, base64.b64decode(config.secret_b64), worker, summary["fencing_attempt"])
    try:
        deadline = time.monotonic() + 60
        while client.stats()["rejected"].get("fenced", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()
    return summary


def run_worker_raising(config, worker, attempt, source):
    """Worker 2 fails every attempt with an error of its own."""
    if worker == 2:
        raise ValueError(f"worker {worker} found a corrupt shard of {source.rows} rows (injected)")
    return W.run_worker(config, worker, attempt, source)
