"""Starting (or reusing) a SparkSession with settings that work for distkeras.

``get_or_create_session()`` never stops or reconfigures a session the user already runs: with no
``master`` given, an active session is used as is. A session we start gets:

- ``PYSPARK_PYTHON`` / ``spark.pyspark.python`` = this interpreter, so executors import the same
  packages (else they run the system Python and miss keras/distkeras);
- ``spark.executorEnv.KERAS_BACKEND`` and ``spark.executorEnv.PYTHONPATH`` (made absolute: an
  executor's working directory is not ours), because a standalone cluster does not pass the
  driver's environment on;
- barrier slot checks that fail in seconds instead of hanging for minutes;
- Arrow on, UI and console progress bar off, few shuffle partitions, log level ERROR;
- loopback addresses (``127.0.0.1``) when the master is local or on loopback;
- ``DISTKERAS_JAX_CACHE`` passed on to the executors when set (JAX's compilation cache);
- the driver JVM's class-data-sharing archive (:mod:`distkeras.spark.jvm_cache`: the session
  starts in about half the time once the first session on the machine has written it;
  ``DISTKERAS_SPARK_CDS=0`` turns it off);

and, when the Keras backend is known, Keras imported in a background thread of the driver while
its JVM starts (:func:`distkeras.backends.startup.import_in_background`), and a background job
that imports Keras in the executors' Python workers (:mod:`distkeras.spark.warmup`;
``DISTKERAS_WARMUP=0`` turns it off).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import warnings
from typing import TYPE_CHECKING, Any, Mapping

from distkeras.core.cache_dirs import switched_on
from distkeras.spark import compat
from distkeras.spark.errors import SparkUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

MIN_JAVA = 17

ENV_SPARK_JIT = "DISTKERAS_SPARK_JIT"
#: The driver JVM of a local session compiles a method with C2, its optimizing compiler, after
#: 5x the calls and loop iterations Java's defaults ask for (Tier4*Threshold are 5000, 600,
#: 15000 and 40000). A short run spends less of the cores on compiling start-up code it runs only
#: a few thousand times (C2 took 9.3-12.6 CPU-seconds of a 35 s TensorFlow digits process on 2
#: cores, 7.3-8.5 s with these), while a feed's hot loops still reach C2 within the first
#: seconds. ``DISTKERAS_SPARK_JIT=0``, or your own driver Java options (the session's conf,
#: ``spark-defaults.conf`` or ``PYSPARK_SUBMIT_ARGS``), keeps Java's.
LOCAL_DRIVER_JIT_OPTIONS = (
    "-XX:Tier4InvocationThreshold=25000 -XX:Tier4MinInvocationThreshold=3000 "
    "-XX:Tier4CompileThreshold=75000 -XX:Tier4BackEdgeThreshold=200000"
)

JAVA_INSTALL_HINT = (
    "Install a Java runtime 17 or newer and put it on PATH or set JAVA_HOME, e.g.\n"
    "  Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless\n"
    "  Fedora/RHEL:   sudo dnf install java-17-openjdk-headless\n"
    "  macOS:         brew install openjdk@17\n"
    "  conda:         conda install -c conda-forge openjdk=17"
)

_java_ok: str | None = None  # the java binary that passed the check (cached on success only)
_java_version_text = ""  # its `java -version` output (part of the driver JVM archive's key)
_started: set[str] = set()  # applicationIds of sessions started by get_or_create_session
_startup: dict[str, dict] = {}  # per started session: the driver JVM archive's use, the background Keras import


def _java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home:
        cand = os.path.join(home, "bin", "java.exe" if os.name == "nt" else "java")
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return shutil.which("java")


def parse_java_version(text: str) -> int | None:
    """Major version from ``java -version`` output: '17.0.15' -> 17, '1.8.0_392' -> 8."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        m = re.search(r"(?:openjdk|java)\s+(\d+)(?:\.(\d+))?", text, re.IGNORECASE)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):
        major = int(m.group(2))
    return major


def check_java(min_version: int = MIN_JAVA) -> str:
    """Return the path of a usable ``java`` (version >= ``min_version``), or raise
    :class:`SparkUnavailableError` saying what is missing and how to install it."""
    global _java_ok, _java_version_text
    if _java_ok is not None:
        return _java_ok
    java = _java_binary()
    if java is None:
        raise SparkUnavailableError(
            f"Spark needs Java {min_version}+, but no `java` was found (not on PATH, JAVA_HOME unset).\n"
            + JAVA_INSTALL_HINT
        )
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SparkUnavailableError(f"Spark needs Java {min_version}+, but `{java} -version` failed: {exc}\n" + JAVA_INSTALL_HINT) from exc
    version = parse_java_version(proc.stderr + proc.stdout)
    if version is None:
        raise SparkUnavailableError(
            f"Spark needs Java {min_version}+, but the version of {java} could not be read "
            f"from: {(proc.stderr + proc.stdout).strip()[:200]!r}\n" + JAVA_INSTALL_HINT
        )
    if version < min_version:
        raise SparkUnavailableError(
            f"Spark needs Java {min_version}+, but {java} is Java {version}.\n" + JAVA_INSTALL_HINT
        )
    _java_ok = java
    _java_version_text = (proc.stderr + proc.stdout).strip()
    return java


def _import_pyspark():
    try:
        import pyspark  # noqa: F401
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SparkUnavailableError("pyspark is not installed: pip install 'distkeras[spark]'") from exc
    return SparkSession


def active_session() -> "SparkSession | None":
    """The SparkSession running in this process, if any (without starting one)."""
    SparkSession = _import_pyspark()
    from pyspark import SparkContext

    from .compat import is_connect

    spark = SparkSession.getActiveSession()  # a Spark Connect session when one is active
    if spark is None and SparkContext._active_spark_context is not None:
        spark = SparkSession._instantiatedSession
    if spark is not None and not is_connect(spark) and spark.sparkContext._jsc is None:  # stopped
        return None
    return spark


def is_local_master(master: str) -> bool:
    return master == "local" or master.startswith("local[") or master.startswith("local-cluster[")


def _is_loopback_master(master: str) -> bool:
    return is_local_master(master) or bool(re.match(r"^spark://(127\.0\.0\.1|localhost)(:\d+)?(,|$)", master))


def _local_threads(master: str) -> int | None:
    """Task slots a local master string gives: local -> 1, local[4] / local[4,2] -> 4, local[*] -> cpus."""
    if master == "local":
        return 1
    m = re.match(r"^local\[(\*|\d+)(?:,\s*\d+)?\]$", master)
    if m:
        return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))
    m = re.match(r"^local-cluster\[(\d+),\s*(\d+),\s*\d+\]$", master)
    if m:
        return int(m.group(1)) * int(m.group(2))
    return None


def _source_root() -> str | None:
    """The folder holding the ``distkeras`` package when it is not installed in site-packages
    (a source checkout); executors need it on their PYTHONPATH."""
    import distkeras

    root = os.path.dirname(os.path.dirname(os.path.abspath(distkeras.__file__)))
    installed = {os.path.abspath(p) for p in (sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib")) if p}
    return None if root in installed else root


def executor_pythonpath() -> str | None:
    """PYTHONPATH for executors: the driver's entries made absolute, plus a source checkout."""
    parts = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    root = _source_root()
    if root and root not in parts:
        parts.append(root)
    return os.pathsep.join(parts) if parts else None


def default_conf(master: str, app_name: str = "distkeras", backend: str | None = None) -> dict[str, str]:
    """The settings ``get_or_create_session`` starts a session with (user ``conf`` overrides)."""
    python = os.environ.get("PYSPARK_PYTHON") or sys.executable
    threads = _local_threads(master)
    conf = {
        "spark.app.name": app_name,
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": sys.executable,
        "spark.executorEnv.PYSPARK_PYTHON": python,
        # A barrier stage asking for more slots than exist hangs ~10 min by default.
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "1s",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "3",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(max(4, 2 * threads) if threads else 32),
        "spark.log.level": "ERROR",
        # A Python worker that crashes (a native library's segfault) reports a Python traceback.
        "spark.python.worker.faulthandler.enabled": "true",
        "spark.sql.execution.pyspark.udf.faulthandler.enabled": "true",
    }
    backend = backend or os.environ.get("KERAS_BACKEND")
    if backend:
        conf["spark.executorEnv.KERAS_BACKEND"] = backend
    for key in ("DISTKERAS_JAX_CACHE", "DISTKERAS_WARMUP"):
        if os.environ.get(key):
            conf[f"spark.executorEnv.{key}"] = os.environ[key]
    pythonpath = executor_pythonpath()
    if pythonpath:
        conf["spark.executorEnv.PYTHONPATH"] = pythonpath
    if _is_loopback_master(master):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if is_local_master(master) and switched_on(ENV_SPARK_JIT):
        from .jvm_cache import java_options_given_elsewhere

        if java_options_given_elsewhere() is None:  # ours in the conf would replace those
            conf["spark.driver.extraJavaOptions"] = LOCAL_DRIVER_JIT_OPTIONS
    return conf


def get_or_create_session(
    master: str | None = None,
    app_name: str = "distkeras",
    conf: Mapping[str, Any] | None = None,
    backend: str | None = None,
) -> "SparkSession":
    """Use the active SparkSession when ``master`` is None; else start one on ``master``
    (default ``local[*]``) with :func:`default_conf` settings, ``conf`` on top.

    Raises :class:`SparkUnavailableError` when Java 17+ is missing, and ``ValueError`` when
    another master's session already runs in this process (one SparkContext per process).
    """
    SparkSession = _import_pyspark()
    active = active_session()
    if active is not None:
        running = compat.master(active)
        if master is None or master == running:
            wanted = backend
            have = compat.conf_get(active, "spark.executorEnv.KERAS_BACKEND")
            if wanted and have and have != wanted:
                warnings.warn(
                    f"the running SparkSession gives executors KERAS_BACKEND={have!r}, not {wanted!r}; "
                    "executor settings cannot change once Spark runs",
                    stacklevel=2,
                )
            return active
        raise ValueError(
            f"a SparkSession on master {running!r} already runs in this process and Spark allows one "
            f"per process; stop it (spark.stop()) before asking for master {master!r}, or pass master=None to use it"
        )
    java = check_java()
    master = master or "local[*]"
    settings = default_conf(master, app_name, backend)
    settings.update({k: str(v) for k, v in (conf or {}).items()})
    # The driver-side Python reads PYSPARK_PYTHON from the environment only; the JVM inherits
    # SPARK_LOCAL_IP from it. Respect values the user already set.
    os.environ.setdefault("PYSPARK_PYTHON", settings["spark.pyspark.python"])
    if _is_loopback_master(master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from distkeras.backends.startup import import_in_background

    from .jvm_cache import driver_java_options

    cds = driver_java_options(settings, java, _java_version_text)
    # while the driver JVM starts (the main thread waits on a socket), Keras is imported
    keras_import = import_in_background(backend or os.environ.get("KERAS_BACKEND"))
    builder = SparkSession.builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    _startup[spark.sparkContext.applicationId] = {"jvm_archive": cds.mode, "jvm_archive_why": cds.why, "keras_import": keras_import}
    spark.sparkContext.setLogLevel(settings.get("spark.log.level", "ERROR"))
    _started.add(spark.sparkContext.applicationId)
    backend = backend or os.environ.get("KERAS_BACKEND")
    if backend:  # the executors import Keras while the caller goes on (distkeras.spark.warmup)
        from distkeras.spark.warmup import start as start_warmup

        start_warmup(spark, backend)
    return spark


def startup_record(spark: "SparkSession") -> dict:
    """How :func:`get_or_create_session` started ``spark``: ``jvm_archive`` (``"use"``, ``"build"``
    or ``"off"``, with ``jvm_archive_why``) and ``keras_import`` (the background import's handle,
    or None). Empty for a session it did not start."""
    try:
        from .compat import app_id

        return dict(_startup.get(app_id(spark), {}))
    except Exception:
        return {}


def started_here(spark: "SparkSession") -> bool:
    """True when ``spark`` was started by :func:`get_or_create_session` (so distkeras may stop
    it); a user's own session is never ours to stop."""
    try:
        from .compat import app_id

        return app_id(spark) in _started  # never a Spark Connect session: distkeras starts none
    except Exception:
        return False


def task_slots(spark: "SparkSession") -> int | None:
    """Task slots the cluster has right now (tasks that can run at once, counting
    ``spark.task.cpus``). On a cluster this grows as executors register; 0 before any has.
    None under Spark Connect on a cluster master (the client cannot ask the scheduler) or with a
    remote Connect server."""
    from .compat import conf_get, is_connect, master, server_is_local

    if is_connect(spark):
        # local[*] counts the cores of the server's machine, known here only when it is this one
        threads = _local_threads(master(spark)) if server_is_local(spark) else None
        return None if threads is None else max(1, threads // max(1, int(conf_get(spark, "spark.task.cpus") or 1)))
    sc = spark.sparkContext
    try:
        jsc = sc._jsc.sc()
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        slots = int(jsc.maxNumConcurrentTasks(profile))
        if slots > 0 or not is_local_master(sc.master):
            return slots
    except Exception:  # private JVM API; fall back to the master string / defaultParallelism
        pass
    threads = _local_threads(sc.master)
    if threads is not None:
        cpus = int(sc.getConf().get("spark.task.cpus", "1") or 1)
        return max(1, threads // max(1, cpus))
    return int(sc.defaultParallelism)


def driver_host(spark: "SparkSession") -> str:
    """The driver's address as Spark's executors know it: ``spark.driver.host`` (Spark sets it
    at start from ``SPARK_LOCAL_IP``/``SPARK_LOCAL_HOSTNAME`` or the machine's name), else the
    address the driver's RPC endpoint is bound to, else this machine's name."""
    host = compat.conf_get(spark, "spark.driver.host")
    if host:
        return host
    try:  # classic sessions only (a private JVM handle)
        return str(spark.sparkContext._jsc.sc().env().rpcEnv().address().host())
    except Exception:
        import socket

        return socket.gethostname()


def ps_endpoint(spark: "SparkSession", ps_host: str | None = None, ps_bind: str | None = None):
    """Where the run's parameter server listens and the address its workers get
    (:class:`distkeras.ps.endpoint.Endpoint`), for the master and driver of ``spark``."""
    from .compat import require_ps_host

    master = compat.conf_get(spark, "spark.master") or ""
    if require_ps_host(spark, ps_host):  # a remote Spark Connect server: the driver is not here
        return choose_ps_endpoint(master, None, ps_host, ps_bind)
    return choose_ps_endpoint(master, None if is_local_master(master) else driver_host(spark), ps_host, ps_bind)


def choose_ps_endpoint(master: str, driver: str | None, ps_host: str | None = None, ps_bind: str | None = None):
    """``ps_host`` > ``$DISTKERAS_PS_HOST`` > loopback for a local master > ``driver`` (the
    driver's address as Spark knows it). Warns when a cluster run would advertise loopback."""
    from distkeras.ps.endpoint import ENV_PS_HOST, LOOPBACK, is_loopback, resolve_endpoint

    endpoint = resolve_endpoint(ps_host, ps_bind, LOOPBACK if is_local_master(master) or not driver else driver)
    if is_loopback(endpoint.advertise) and not _is_loopback_master(master):
        source = "ps_host" if ps_host else (ENV_PS_HOST if os.environ.get(ENV_PS_HOST) else "spark.driver.host")
        warnings.warn(
            f"the parameter server advertises {endpoint.advertise} ({source}) to the executors of master {master!r}: "
            "executors on other hosts cannot reach it there; set ps_host (or spark.driver.host) to an address "
            "of the driver that the executors can reach",
            stacklevel=3,
        )
    return endpoint
