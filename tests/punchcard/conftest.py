"""Fixtures for punchcard: real servers started as subprocesses on free 127.0.0.1 ports."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart" if __import__("importlib").util.find_spec("python_multipart") is None else "python_multipart")
httpx = pytest.importorskip("httpx")

from tests.support import ROOT, child_env, wait_for  # noqa: E402  (wait_for: for the test modules)
FAKE_JOB = Path(__file__).with_name("fake_job.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with_root() -> dict[str, str]:
    env = child_env()
    env.pop("DISTKERAS_PUNCHCARD_TOKEN", None)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distkeras", *args], capture_output=True, text=True, timeout=timeout,
        env=env or env_with_root(), cwd=ROOT,
    )


def fake_python(tmp: Path) -> Path:
    """An executable that runs the test double (``fake_job.py``) under this interpreter."""
    wrapper = tmp / "fake-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_JOB}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


class Server:
    def __init__(self, tmp: Path, *, python: Path | None = None, extra: tuple[str, ...] = (), name: str = "srv"):
        self.tmp = tmp
        self.db = tmp / "punchcard.sqlite"
        self.workdir = tmp / "work"
        self.python = python
        self.extra = extra
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.scheme = "http"
        self.verify: object = True  # for https: what the health check verifies the server with

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.port = free_port()
        argv = [
            sys.executable, "-m", "distkeras", "punchcard", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--db", str(self.db), "--workdir", str(self.workdir), "--log-level", "warning", "--grace", "3",
            *self.extra,
        ]
        if self.python is not None:
            argv += ["--python", str(self.python)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env_with_root(), cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not come up:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def token(self, name: str) -> str:
        from distkeras.punchcard.store import Store

        with Store(self.db) as store:
            return store.add_token(name)

    def job_dir(self, job_id: str) -> Path:
        return self.workdir / "jobs" / job_id


def keras_zip(config: dict, members: dict[str, bytes] | None = None) -> bytes:
    """A hand-made ``.keras`` archive (no Keras needed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.8.0"}))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
        for name, data in (members or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


SAFE_CONFIG = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "sequential",
        "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
            {"module": "keras.layers", "class_name": "Dense", "config": {"units": 3, "name": "dense",
             "activation": "softmax"}},
        ],
    },
}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One server for most tests; jobs run the test double; 1 MiB upload limit, 2 jobs per token."""
    tmp = tmp_path_factory.mktemp("punchcard")
    # no limit on invalid tokens: several tests send many on purpose (test_security tests the limit)
    srv = Server(tmp, python=fake_python(tmp), extra=("--max-upload-mb", "1", "--max-jobs-per-token", "2", "--auth-max-failures", "0"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def token(server: Server, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:40]
    return server.token(f"t-{name}-{time.monotonic_ns() % 10**9}")
