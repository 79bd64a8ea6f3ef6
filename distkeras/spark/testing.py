"""Real Spark standalone clusters for tests and local experiments.

``LocalStandaloneCluster``: a master + worker on 127.0.0.1. ``NamespaceCluster``: a multi-host
cluster on one Linux machine, each host a network namespace with its own address and its own
loopback (needs root and ``ip``), where anything that binds or advertises 127.0.0.1 fails as it
would on a real cluster.

The pyspark wheel has no ``start-master.sh``; we run ``spark-class`` (which execs ``java``, so the
pid we get is the JVM's) with ``SPARK_HOME`` set to the pyspark package folder, with logs and the
workers' work dirs in a temporary folder. Each JVM starts in its own process group; stopping
sends SIGTERM to the JVM, then SIGKILL to its group (the executors the worker launched included)
after a timeout. Nothing is left behind, also when starting fails.

    with LocalStandaloneCluster(cores=2, memory="2g") as cluster:
        spark = get_or_create_session(cluster.master_url)

    with NamespaceCluster(hosts=2, cores_per_host=1) as cluster:   # the driver runs in host 0
        report = cluster.run_driver_json("job.py", cluster.master_url)
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
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


def spawn_logged(argv: list[str], env: dict[str, str], folder: str, name: str) -> subprocess.Popen:
    """Start ``argv`` in ``folder`` in its own session (so its process group takes the executors
    it launches too), stdout and stderr to ``folder/NAME.log``."""
    log = open(os.path.join(folder, f"{name}.log"), "wb")
    try:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder, start_new_session=True)
    finally:
        log.close()


class LocalStandaloneCluster:
    """Context manager: a standalone master and one worker with ``cores`` and ``memory``.

    ``gpus``: addresses of (fake or real) GPUs the worker announces, through a discovery script
    it runs at start (``spark.worker.resource.gpu.*``); applications then ask for them with
    ``spark.executor.resource.gpu.amount`` (see :func:`distkeras.spark.gpus.write_discovery_script`).
    """

    def __init__(
        self,
        cores: int = 2,
        memory: str = "2g",
        start_timeout: float = 90.0,
        stop_timeout: float = 15.0,
        gpus: list[str] | None = None,
    ):
        self.cores = int(cores)
        self.memory = memory
        self.gpus = [str(a) for a in gpus] if gpus else []
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
        env = self._env()
        if name == "worker" and self.gpus:
            from distkeras.spark.gpus import write_discovery_script

            script = write_discovery_script(os.path.join(self.tmpdir.name, "gpus.sh"), self.gpus)
            opts = f"-Dspark.worker.resource.gpu.amount={len(self.gpus)} -Dspark.worker.resource.gpu.discoveryScript={script}"
            env["SPARK_WORKER_OPTS"] = (env.get("SPARK_WORKER_OPTS", "") + " " + opts).strip()
        proc = spawn_logged([os.path.join(spark_home(), "bin", "spark-class"), *args], env, self.tmpdir.name, name)
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

    def _stop_proc(self, proc: subprocess.Popen) -> None:
        if proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            _exited(proc, self.stop_timeout)
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


# --- a multi-host cluster of Linux network namespaces -------------------------------------------


class NamespaceUnavailableError(SparkUnavailableError):
    """Network namespaces cannot be made here: not Linux, not root, or no ``ip`` (iproute2)."""


class NamespaceCleanupError(RuntimeError):
    """Something a :class:`NamespaceCluster` created could not be removed."""


def check_namespaces() -> str:
    """The path of ``ip`` when this process can make network namespaces (Linux, root, iproute2);
    else raise :class:`NamespaceUnavailableError` naming what is missing."""
    if not sys.platform.startswith("linux"):
        raise NamespaceUnavailableError(f"a NamespaceCluster needs Linux network namespaces; this is {sys.platform}")
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (creating network namespaces needs CAP_SYS_ADMIN; this process runs as uid {os.geteuid()})")
    ip = shutil.which("ip")
    if ip is None:
        missing.append("the `ip` command from iproute2 (not found on PATH; e.g. apt-get install iproute2)")
    if missing:
        raise NamespaceUnavailableError("a NamespaceCluster needs " + " and ".join(missing))
    return ip


# Asks the master's web UI (from inside the driver host's namespace: the root namespace cannot
# reach 192.0.2.x) until the master is ALIVE (WANT 0) or a worker with CORES cores is ALIVE at each
# of the HOSTS addresses (WANT > 0); prints the master's JSON then. WANT < 0: print it once.
_POLL_MASTER = r"""
import json, sys, time, urllib.request
url, want, cores, hosts, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), set(sys.argv[4].split(",")), float(sys.argv[5])
deadline = time.monotonic() + timeout
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            st = json.loads(r.read().decode())
    except Exception:
        st = None
    if want < 0:
        print(json.dumps(st)); sys.exit(0 if st is not None else 1)
    if want == 0 and st is not None and st.get("status") == "ALIVE":
        print(json.dumps(st)); sys.exit(0)
    if want > 0 and st is not None:
        alive = {w.get("host") for w in st.get("workers", []) if w.get("state") == "ALIVE" and int(w.get("cores", 0)) >= cores}
        if hosts <= alive:
            print(json.dumps(st)); sys.exit(0)
    if time.monotonic() >= deadline:
        print(json.dumps(st)); sys.exit(1)
    time.sleep(0.25)
"""

_instances = itertools.count()


class NamespaceCluster:
    """Context manager: a Spark standalone cluster over several "hosts", each a Linux network
    namespace with its own address (192.0.2.0/24, a documentation range) and its own loopback.

    Namespace 0, the *driver host* (192.0.2.1), runs the master and the driver
    (:meth:`run_driver`); each of the ``hosts`` worker hosts (192.0.2.2, .3, ...) runs one
    standalone worker with ``cores_per_host`` cores and ``memory``: ``hosts + 1`` namespaces in
    all. They are joined by a bridge in namespace 0 and one veth pair per worker host (a veth
    to the root namespace carries no traffic in some sandboxes, and the root namespace cannot
    reach these addresses at all). Anything that binds or advertises 127.0.0.1 fails here as
    on a real cluster. Needs Linux, root and ``ip`` (iproute2), else
    :class:`NamespaceUnavailableError`.

        with NamespaceCluster(hosts=2, cores_per_host=1) as cluster:
            out = cluster.run_driver_json("job.py", cluster.master_url)

    Everything it creates (namespaces, veths, bridge, JVMs, executors, Python workers, drivers,
    any process left in its namespaces, the temporary folder) is removed by :meth:`stop`, which
    ``__exit__`` calls (also on an exception or KeyboardInterrupt in the body) and which
    ``start`` calls itself when starting fails.
    """

    SUBNET = "192.0.2"
    MASTER_PORT = 7077
    WEBUI_PORT = 8080
    WORKER_WEBUI_PORT = 8081

    def __init__(
        self,
        hosts: int = 2,
        cores_per_host: int = 1,
        memory: str = "1g",
        *,
        start_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        python: str | None = None,
        backend: str | None = None,
    ):
        if not 1 <= int(hosts) <= 250:
            raise ValueError(f"hosts (worker hosts) must be between 1 and 250, got {hosts}")
        if int(cores_per_host) < 1:
            raise ValueError(f"cores_per_host must be >= 1, got {cores_per_host}")
        self.hosts = int(hosts)
        self.cores_per_host = int(cores_per_host)
        self.memory = memory
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.python = python or sys.executable
        self.backend = backend or os.environ.get("KERAS_BACKEND") or "jax"
        tag = f"dk-{os.getpid()}-{next(_instances)}"
        self.namespaces: list[str] = [f"{tag}-h{i}" for i in range(self.hosts + 1)]
        self.host_addresses: list[str] = [f"{self.SUBNET}.{i + 1}" for i in range(self.hosts + 1)]
        self.tmpdir: tempfile.TemporaryDirectory | None = None
        self.procs: dict[str, subprocess.Popen] = {}  # running now, by name
        self.spawned: list[int] = []  # pid of every process it started (JVMs, drivers, pollers), for tests
        self._created: list[str] = []  # namespaces that exist now, in creation order
        self._ip: str | None = None
        self._drivers = itertools.count()

    # --- addresses ---------------------------------------------------------------------------

    @property
    def driver_namespace(self) -> str:
        return self.namespaces[0]

    @property
    def driver_address(self) -> str:
        return self.host_addresses[0]

    @property
    def worker_namespaces(self) -> list[str]:
        return self.namespaces[1:]

    @property
    def worker_addresses(self) -> list[str]:
        return self.host_addresses[1:]

    @property
    def master_url(self) -> str:
        return f"spark://{self.driver_address}:{self.MASTER_PORT}"

    @property
    def webui_url(self) -> str:
        """The master's web UI; reachable from the driver host's namespace only."""
        return f"http://{self.driver_address}:{self.WEBUI_PORT}"

    @property
    def work_dir(self) -> str | None:
        return os.path.join(self.tmpdir.name, "work") if self.tmpdir else None

    def namespace_inode(self, ns: str | int) -> int:
        """The inode of a namespace's network namespace: what ``/proc/PID/ns/net`` of a process
        in it reads as ``net:[INODE]``."""
        return os.stat(f"/run/netns/{self._ns(ns)}").st_ino

    def _ns(self, ns: str | int) -> str:
        name = self.namespaces[ns] if isinstance(ns, int) else ns
        if name not in self.namespaces:
            raise ValueError(f"{ns!r} is not one of this cluster's namespaces {self.namespaces}")
        return name

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "NamespaceCluster":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.stop()
            return
        try:
            self.stop()
        except Exception as cleanup:  # keep the body's exception; still tell about the leak
            import warnings

            warnings.warn(f"NamespaceCluster cleanup after {exc_type.__name__} failed: {cleanup}", RuntimeWarning, stacklevel=2)

    def _run_ip(self, *args: str, ns: str | None = None) -> str:
        cmd = [self._ip, *(("-n", ns) if ns else ()), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise NamespaceUnavailableError(f"`{' '.join(cmd)}` failed with code {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> None:
        if self.procs or self._created:
            raise RuntimeError("this NamespaceCluster is already started")
        self._ip = check_namespaces()
        check_java()
        self.tmpdir = tempfile.TemporaryDirectory(prefix="distkeras-netns-")
        try:
            os.makedirs(os.path.join(self.tmpdir.name, "logs"))
            os.makedirs(self.work_dir)
            self._make_network()
            deadline = time.monotonic() + self.start_timeout
            self._spawn(
                "master",
                self.driver_namespace,
                self.driver_address,
                ["org.apache.spark.deploy.master.Master", "--host", self.driver_address, "--port", str(self.MASTER_PORT), "--webui-port", str(self.WEBUI_PORT)],
            )
            # A worker that calls before the master is elected leader is answered only by its
            # retry, 5-15 s later: start the workers once the master is ALIVE.
            self._wait_master(0, deadline, "the master did not come up")
            for i, (ns, addr) in enumerate(zip(self.worker_namespaces, self.worker_addresses), start=1):
                self._spawn(
                    f"worker{i}",
                    ns,
                    addr,
                    [
                        "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", addr, "--webui-port", str(self.WORKER_WEBUI_PORT),
                        "--cores", str(self.cores_per_host), "--memory", self.memory, "--work-dir", os.path.join(self.work_dir, f"h{i}"),
                    ],
                )
            self._wait_master(self.hosts, deadline, f"the workers {self.worker_addresses} did not all register with {self.master_url}")
        except BaseException:
            self.stop()
            raise

    def _make_network(self) -> None:
        for ns in self.namespaces:
            self._run_ip("netns", "add", ns)
            self._created.append(ns)
            self._run_ip("link", "set", "lo", "up", ns=ns)
        ns0 = self.driver_namespace
        self._run_ip("link", "add", "name", "br0", "type", "bridge", "forward_delay", "0", ns=ns0)
        self._run_ip("addr", "add", f"{self.driver_address}/24", "dev", "br0", ns=ns0)
        self._run_ip("link", "set", "br0", "up", ns=ns0)
        for i, (ns, addr) in enumerate(zip(self.worker_namespaces, self.worker_addresses), start=1):
            self._run_ip("link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns, ns=ns0)
            self._run_ip("link", "set", f"v{i}", "master", "br0", ns=ns0)
            self._run_ip("link", "set", f"v{i}", "up", ns=ns0)
            self._run_ip("addr", "add", f"{addr}/24", "dev", "eth0", ns=ns)
            self._run_ip("link", "set", "eth0", "up", ns=ns)

    def _spark_env(self, address: str) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("SPARK_LOCAL_HOSTNAME", "SPARK_PUBLIC_DNS", "SPARK_MASTER_HOST", "SPARK_CONF_DIR"):
            env.pop(key, None)
        env.update(
            SPARK_HOME=spark_home(),
            SPARK_LOCAL_IP=address,
            SPARK_LOG_DIR=os.path.join(self.tmpdir.name, "logs"),
            SPARK_WORKER_DIR=self.work_dir,
            PYSPARK_PYTHON=self.python,
            # The master and worker daemons do little work: a small JIT and GC start them faster.
            SPARK_DAEMON_JAVA_OPTS=(env.get("SPARK_DAEMON_JAVA_OPTS", "") + " -XX:TieredStopAtLevel=1 -XX:+UseSerialGC").strip(),
        )
        pythonpath = executor_pythonpath()
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        return env

    def _spawn(self, name: str, ns: str, address: str, args: list[str]) -> subprocess.Popen:
        # `ip netns exec` execs its command (no fork) and spark-class execs java: the pid is the JVM's.
        argv = [self._ip, "netns", "exec", ns, os.path.join(spark_home(), "bin", "spark-class"), *args]
        proc = spawn_logged(argv, self._spark_env(address), self.tmpdir.name, name)
        self.procs[name] = proc
        self.spawned.append(proc.pid)
        return proc

    def log(self, name: str) -> str:
        """The output of ``master``, ``worker1``, ``worker2``, ..."""
        try:
            return Path(self.tmpdir.name, f"{name}.log").read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def _logs(self, limit: int = 2000) -> str:
        names = ["master", *(f"worker{i}" for i in range(1, self.hosts + 1))]
        return "\n".join(f"--- {n} log (tail) ---\n{self.log(n)[-limit:]}" for n in names)

    def _poll_argv(self, want: int, timeout: float) -> list[str]:
        return [self.python, "-c", _POLL_MASTER, self.webui_url + "/json/", str(want), str(self.cores_per_host), ",".join(self.worker_addresses), str(timeout)]

    def status(self) -> dict | None:
        """The master's JSON status (workers, cores, apps), or None if it does not answer."""
        proc = self.exec_in(0, self._poll_argv(-1, 0), capture_output=True, text=True, timeout=30)
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return None

    def _wait_master(self, want: int, deadline: float, what: str) -> dict:
        """Poll the master from namespace 0 (see ``_POLL_MASTER``) until ``deadline``; fail early,
        with the logs, when a JVM exits."""
        timeout = max(1.0, deadline - time.monotonic())
        poller = subprocess.Popen(
            [self._ip, "netns", "exec", self.driver_namespace, *self._poll_argv(want, timeout)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.procs["poller"] = poller
        self.spawned.append(poller.pid)
        while True:
            if poller.poll() is not None:
                out = poller.stdout.read()
                self._stop_proc(self.procs.pop("poller"))
                if poller.returncode == 0:
                    return json.loads(out.strip().splitlines()[-1])
                raise SparkUnavailableError(f"{what} in {self.start_timeout:.0f} s; last master status: {out.strip()[-1500:]}\n{self._logs()}")
            for name, proc in self.procs.items():
                if name != "poller" and proc.poll() is not None:
                    raise SparkUnavailableError(f"the standalone {name} exited with code {proc.returncode} while starting:\n{self._logs()}")
            if time.monotonic() >= deadline + 10:  # the poller itself hangs
                raise SparkUnavailableError(f"{what} in {self.start_timeout:.0f} s:\n{self._logs()}")
            time.sleep(0.2)

    # --- running things in the namespaces ----------------------------------------------------

    def exec_in(self, ns: str | int, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run(["ip", "netns", "exec", NS, *argv], **kwargs)``: any command on one
        host; ``ns`` is a namespace name or an index (0 = the driver host)."""
        if not self._created:
            raise RuntimeError("the NamespaceCluster is not running")
        return subprocess.run([self._ip, "netns", "exec", self._ns(ns), *argv], **kwargs)

    def driver_env(self, **overrides: str) -> dict[str, str]:
        """The environment :meth:`run_driver` gives a driver: this one, with the checkout on
        ``PYTHONPATH``, ``PYSPARK_PYTHON``, ``SPARK_LOCAL_IP`` = the driver host's address,
        ``KERAS_BACKEND`` and a ``KERAS_HOME`` in the cluster's temporary folder."""
        env = self._spark_env(self.driver_address)
        for key in ("SPARK_LOG_DIR", "SPARK_WORKER_DIR", "PYSPARK_DRIVER_PYTHON"):
            env.pop(key, None)
        keras_home = os.path.join(self.tmpdir.name, "keras-home")
        os.makedirs(keras_home, exist_ok=True)
        env.update(KERAS_BACKEND=self.backend, KERAS_HOME=keras_home)
        env.update(overrides)
        return env

    def run_driver(self, script: str | os.PathLike, *args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: str | None = None) -> subprocess.CompletedProcess:
        """Run ``python SCRIPT ARGS`` on the driver host (namespace 0) with :meth:`driver_env`
        (``env`` on top) and return the completed process (stdout, stderr as text). On timeout
        or interrupt the driver's whole process group (its Spark JVM too) is killed and
        ``subprocess.TimeoutExpired`` / the interrupt propagates."""
        return self.run_in_driver_host([self.python, str(script), *map(str, args)], env=env, timeout=timeout, cwd=cwd)

    def run_in_driver_host(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600, cwd: str | None = None) -> subprocess.CompletedProcess:
        """Like :meth:`run_driver` for any command line (e.g. ``[python, "-m", "distkeras", ...]``)."""
        if not self._created:
            raise RuntimeError("the NamespaceCluster is not running")
        name = f"driver{next(self._drivers)}"
        full_env = self.driver_env(**(env or {}))
        proc = subprocess.Popen(
            [self._ip, "netns", "exec", self.driver_namespace, *argv],
            env=full_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.procs[name] = proc
        self.spawned.append(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException:
            self._kill_group(proc)
            proc.communicate()
            raise
        finally:
            if proc.returncode is not None:
                self._kill_group(proc)  # what it left in its process group (its JVM)
                self.procs.pop(name, None)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def run_driver_json(self, script: str | os.PathLike, *args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: str | None = None):
        """:meth:`run_driver`, which must exit 0 (else RuntimeError with its stderr's tail);
        returns its last stdout line parsed as JSON."""
        proc = self.run_driver(script, *args, env=env, timeout=timeout, cwd=cwd)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"driver {script} exited with code {proc.returncode}; stderr:\n{proc.stderr[-4000:]}\nstdout:\n{proc.stdout[-1000:]}")
        return json.loads(lines[-1])

    # --- stopping ----------------------------------------------------------------------------

    def pids_in(self, ns: str | int) -> list[int]:
        """Processes running in a namespace now (``ip netns pids``)."""
        out = self._run_ip("netns", "pids", self._ns(ns))
        return [int(p) for p in out.split()]

    @staticmethod
    def _kill_group(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _stop_proc(self, proc: subprocess.Popen) -> None:
        if proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            _exited(proc, self.stop_timeout)
            self._kill_group(proc)  # the JVM if it ignored SIGTERM, executors it launched
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def _sweep(self, ns: str) -> list[int]:
        """SIGKILL whatever still runs in ``ns`` (Python workers in their own process groups,
        anything a command started there); returns the pids still there after waiting."""
        deadline = time.monotonic() + self.stop_timeout
        while True:
            try:
                pids = self.pids_in(ns)
            except NamespaceUnavailableError:
                return []
            if not pids or time.monotonic() >= deadline:
                return pids
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop drivers, workers, then the master (SIGTERM, then SIGKILL to each process group),
        kill anything left in the namespaces, delete the namespaces (their veths and bridge go
        with them) and the temporary folder. Idempotent; raises :class:`NamespaceCleanupError`
        only when something could not be removed."""
        for name in sorted(self.procs, key=lambda n: (n == "master", n)):  # the master last
            self._stop_proc(self.procs.pop(name))
        problems = []
        for ns in list(reversed(self._created)):
            left = self._sweep(ns)
            if left:
                problems.append(f"processes {left} still run in namespace {ns}")
            try:
                self._run_ip("netns", "del", ns)
            except NamespaceUnavailableError as exc:
                if os.path.exists(f"/run/netns/{ns}"):
                    problems.append(str(exc))
                    continue
            self._created.remove(ns)
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None
        if problems:
            raise NamespaceCleanupError("NamespaceCluster could not clean up: " + "; ".join(problems))


def _exited(proc: subprocess.Popen, timeout: float) -> bool:
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
