"""A real Spark standalone master + worker on 127.0.0.1, for tests and local experiments.

The pyspark wheel has no ``start-master.sh``; we run ``spark-class`` (which execs ``java``, so the
pid we get is the JVM's) with ``SPARK_HOME`` set to the pyspark package folder, on free ports,
with logs and the worker's work dir in a temporary folder. Each JVM starts in its own process
group; stopping sends SIGTERM to the JVM, then SIGKILL to its group (the executors the worker
launched included) after a timeout. Nothing is left behind, also when starting fails.

    with LocalStandaloneCluster(cores=2, memory="2g") as cluster:
        spark = get_or_create_session(cluster.master_url)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from distkeras.spark.errors import SparkUnavailableError
from distkeras.spark.session import check_java, executor_pythonpath

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def spark_home() -> str:
    import pyspark

    return os.path.dirname(os.path.abspath(pyspark.__file__))


class LocalStandaloneCluster:
    """Context manager: a standalone master and one worker with ``cores`` and ``memory``."""

    def __init__(self, cores: int = 2, memory: str = "2g", start_timeout: float = 90.0, stop_timeout: float = 15.0):
        self.cores = int(cores)
        self.memory = memory
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.master_port = self.webui_port = self.worker_port = self.worker_webui_port = None
        self.tmpdir: tempfile.TemporaryDirectory | None = None
        self.work_dir: str | None = None
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    @property
    def webui_url(self) -> str:
        return f"http://{HOST}:{self.webui_port}"

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "LocalStandaloneCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        home = spark_home()
        env.update(
            SPARK_HOME=home,
            SPARK_LOCAL_IP=HOST,
            SPARK_LOG_DIR=os.path.join(self.tmpdir.name, "logs"),
            SPARK_WORKER_DIR=self.work_dir,
            PYSPARK_PYTHON=env.get("PYSPARK_PYTHON", sys.executable),
        )
        pythonpath = executor_pythonpath()
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(os.path.join(self.tmpdir.name, f"{name}.log"), "wb")
        try:
            proc = subprocess.Popen(
                [os.path.join(spark_home(), "bin", "spark-class"), *args],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.tmpdir.name,
                start_new_session=True,  # own process group: the executors it launches too
            )
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        try:
            return Path(self.tmpdir.name, f"{name}.log").read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def status(self) -> dict | None:
        """The master's JSON status (workers, cores, apps), or None if it does not answer."""
        try:
            with urllib.request.urlopen(self.webui_url + "/json/", timeout=2) as r:
                return json.loads(r.read().decode())
        except Exception:
            return None

    def start(self) -> None:
        check_java()
        self.tmpdir = tempfile.TemporaryDirectory(prefix="distkeras-spark-")
        self.work_dir = os.path.join(self.tmpdir.name, "work")
        os.makedirs(self.work_dir)
        self.master_port, self.webui_port, self.worker_port, self.worker_webui_port = (free_port() for _ in range(4))
        try:
            self._spawn(
                "master",
                ["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(self.master_port), "--webui-port", str(self.webui_port)],
            )
            self._spawn(
                "worker",
                [
                    "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", HOST, "--port", str(self.worker_port),
                    "--webui-port", str(self.worker_webui_port), "--cores", str(self.cores), "--memory", self.memory,
                    "--work-dir", self.work_dir,
                ],
            )
            self._wait_registered()
        except BaseException:
            self.stop()
            raise

    def _wait_registered(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SparkUnavailableError(f"the standalone {name} exited with code {proc.returncode}:\n{self.log(name)[-3000:]}")
            st = self.status()
            if st and any(w.get("state") == "ALIVE" and int(w.get("cores", 0)) >= self.cores for w in st.get("workers", [])):
                return
            time.sleep(0.5)
        raise SparkUnavailableError(
            f"the standalone worker did not register with {self.master_url} in {self.start_timeout:.0f} s\n"
            f"master log:\n{self.log('master')[-2000:]}\nworker log:\n{self.log('worker')[-2000:]}"
        )

    def _exited(self, proc: subprocess.Popen, timeout: float) -> bool:
        """Wait until ``proc`` exits, without reaping it: a zombie keeps its pid, and so its
        process group id, from being reused until we are done with the group."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:  # already reaped
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _stop_proc(self, proc: subprocess.Popen) -> None:
        if proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._exited(proc, self.stop_timeout)
            # Whatever is left in the JVM's process group (the JVM itself if it ignored SIGTERM,
            # executors and Python workers it launched): SIGKILL, then reap.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass

    def stop(self) -> None:
        """Stop the worker, then the master; remove the temporary folder. Idempotent."""
        for name in ("worker", "master"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                self._stop_proc(proc)
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None
