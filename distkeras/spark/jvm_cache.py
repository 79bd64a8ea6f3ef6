"""A class-data-sharing archive for the Spark driver JVM: a session starts in about half the time.

Starting a local SparkSession on the 2-core test machine took 12.7 s, most of it the JVM loading
and verifying the classes of Spark's jars, and its first two small jobs another 6.6 s. Java's
*AppCDS* keeps those classes parsed and verified in an archive that later JVMs map into memory:
with one, the session started in 6.9 s and the two jobs ran in 3.6 s (measured with a bare
``SparkSession``; whole ``distkeras`` runs in ``benchmarks/results/elephas_compare.json``).

How it is used (:func:`driver_java_options`, called by
:func:`distkeras.spark.session.get_or_create_session` when it launches the driver JVM itself):

* **A session that finds the archive maps it** (``-XX:SharedArchiveFile``). An archive the JVM
  cannot use (another JDK, another class path) is ignored by the JVM, and ``-Xlog:cds*=off``
  keeps its notes off the console.
* **Without one, the session runs as before, and the archive is written after the process
  ends.** Recording classes slows a JVM down a lot (a whole digits run took 72 s instead of
  41 s), so the user's own run never records: at its exit an ``atexit`` hook starts a detached,
  low-priority builder process (:func:`build`: a small ``local[1]`` session with
  ``-XX:ArchiveClassesAtExit``, one Arrow job through a Python worker, 40–70 s on 2 cores). The
  builder checks the file it wrote with a short ``java -version`` that maps it and only then
  renames it into place (a truncated archive crashes the JVM that maps it, so no partial file
  ever has the final name). One builder runs at a time (a lock file holding its pid; a dead
  owner's lock is taken over). ``python -m distkeras.spark.jvm_cache`` builds it now, in the
  foreground (for an image or a CI cache), and ``--status`` says where it is.
* The archive's name is a hash of what it depends on: the ``java`` binary and its version, the
  Spark installation (its jars) and the driver's extra class path and Java options.
* ``DISTKERAS_SPARK_CDS``: ``0``/``off`` turns it off, a path picks the folder (default
  ``~/.cache/distkeras/spark-cds``, see :mod:`distkeras.core.cache_dirs`). An archive takes about
  160 MB; a builder keeps the three newest (another Spark, JDK or class path gets its own).
* Left alone: a JVM that already runs in this process, one started by ``PYSPARK_GATEWAY_PORT``,
  driver Java options given in ``spark-defaults.conf`` or ``PYSPARK_SUBMIT_ARGS`` (passing ours
  would replace them), options that already choose a CDS archive, and Windows. User options in
  the session's ``conf`` are kept: ours are added after them.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, NamedTuple

from distkeras.core.cache_dirs import cache_folder

ENV_SPARK_CDS = "DISTKERAS_SPARK_CDS"
OPTIONS_KEY = "spark.driver.extraJavaOptions"
QUIET = "-Xlog:cds*=off"  # the JVM's notes about classes it skips and archives it cannot use
_CHOSEN_ALREADY = ("SharedArchiveFile", "ArchiveClassesAtExit", "Xshare", "SharedClassListFile")
STALE_PART_SECONDS = 24 * 3600
KEEP_ARCHIVES = 3  # a builder removes older ones (160 MB each)
STALE_LOCK_SECONDS = 3600  # a builder takes a minute or two: an older lock's pid may be another process's now
#: the session settings that change the driver JVM's class path or options (part of the archive's
#: key; of the heap size only whether it passes 32 GB: the JVM then drops compressed pointers, and
#: with them the archive)
JVM_SETTINGS = ("spark.driver.extraClassPath", "spark.driver.extraLibraryPath", "spark.driver.memory", OPTIONS_KEY)


class CdsPlan(NamedTuple):
    """What a session's driver JVM does about the archive: ``mode`` is ``"use"`` (``options`` map
    ``archive``), ``"build"`` (none yet: a builder writes ``archive`` after this process) or
    ``"off"`` (``why`` says why)."""

    mode: str
    options: str = ""
    archive: Path | None = None
    why: str = ""


def spark_home() -> Path | None:
    """The Spark installation the driver JVM starts from (pyspark's own when SPARK_HOME is unset)."""
    try:
        from pyspark.find_spark_home import _find_spark_home

        return Path(_find_spark_home())
    except Exception:  # no pyspark, or it finds no Spark: the session start reports that itself
        return None


def archive_key(java: str, java_version: str, home: Path | None, settings: Mapping[str, str]) -> str:
    """A short hash of everything a driver archive depends on."""
    h = hashlib.sha256()
    for part in (os.path.realpath(java), java_version, str(home), sys.platform):
        h.update(part.encode() + b"\0")
    jars = home / "jars" if home else None
    if jars is not None and jars.is_dir():
        for jar in sorted(jars.iterdir()):
            try:
                h.update(f"{jar.name}:{jar.stat().st_size}".encode() + b"\0")
            except OSError:
                continue
    for key in JVM_SETTINGS:
        value = settings.get(key, "")
        if key == "spark.driver.memory":  # only which side of 32 GB counts (compressed pointers)
            value = "large" if _heap_bytes(value) >= COMPRESSED_POINTERS_LIMIT else ""
        h.update(f"{key}={value}".encode() + b"\0")
    for var in ("SPARK_DIST_CLASSPATH", "HADOOP_CONF_DIR", "SPARK_CONF_DIR"):
        h.update(f"{var}={os.environ.get(var, '')}".encode() + b"\0")
    return h.hexdigest()[:16]


COMPRESSED_POINTERS_LIMIT = 32 * 2**30 - 2**20


def _heap_bytes(memory: str) -> int:
    """``spark.driver.memory`` in bytes (:func:`distkeras.spark.compat.memory_bytes`); 0 when unset or unreadable."""
    from .compat import memory_bytes

    try:
        return memory_bytes(memory) if memory else 0
    except ValueError:
        return 0


def _defaults_give_java_options(home: Path | None) -> bool:
    """True when ``spark-defaults.conf`` gives the driver Java options (ours would replace them)."""
    folder = os.environ.get("SPARK_CONF_DIR") or (str(home / "conf") if home else None)
    if not folder:
        return False
    try:
        text = (Path(folder) / "spark-defaults.conf").read_text(errors="replace")
    except OSError:
        return False
    keys = (OPTIONS_KEY, "spark.driver.defaultJavaOptions")
    return any(line.split()[0] in keys for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def java_options_given_elsewhere(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """Why the driver's Java options come from outside the session's conf, where options in the
    conf would replace them (``PYSPARK_SUBMIT_ARGS``, ``spark-defaults.conf``); None when they do
    not. ``home``: the Spark installation (default :func:`spark_home`)."""
    env = os.environ if environ is None else environ
    if "driver-java-options" in env.get("PYSPARK_SUBMIT_ARGS", ""):
        return "PYSPARK_SUBMIT_ARGS gives the driver Java options"
    if _defaults_give_java_options(spark_home() if home is None else home):
        return "spark-defaults.conf gives the driver Java options"
    return None


def plan(settings: Mapping[str, str], java: str, java_version: str, environ: Mapping[str, str] | None = None) -> CdsPlan:
    """Decide what the driver JVM about to start does about the archive (see the module's text)."""
    env = os.environ if environ is None else environ
    folder = cache_folder(ENV_SPARK_CDS, "spark-cds", env)
    if folder is None:
        return CdsPlan("off", why=f"{ENV_SPARK_CDS} turns it off")
    if os.name == "nt":
        return CdsPlan("off", why="not on Windows")
    if env.get("PYSPARK_GATEWAY_PORT"):
        return CdsPlan("off", why="the JVM is started by someone else (PYSPARK_GATEWAY_PORT)")
    if any(flag in settings.get(OPTIONS_KEY, "") for flag in _CHOSEN_ALREADY):
        return CdsPlan("off", why="the driver Java options already choose a CDS archive")
    home = spark_home()
    elsewhere = java_options_given_elsewhere(env, home)
    if elsewhere:
        return CdsPlan("off", why=elsewhere)
    archive = folder / f"{archive_key(java, java_version, home, settings)}.jsa"
    try:
        if archive.stat().st_size > 0:
            return CdsPlan("use", f"-XX:SharedArchiveFile={archive} {QUIET}", archive=archive)
    except OSError:
        pass
    return CdsPlan("build", archive=archive, why="no archive yet: written after this process ends")


def driver_java_options(settings: dict[str, str], java: str, java_version: str) -> CdsPlan:
    """Add the archive's options to ``settings`` (the session's conf, changed in place); without
    an archive yet, have a builder write one when this process exits."""
    from pyspark import SparkContext

    if SparkContext._gateway is not None:  # a JVM already runs in this process: options would not apply
        return CdsPlan("off", why="the driver JVM already runs")
    chosen = plan(settings, java, java_version)
    if chosen.mode == "use":
        settings[OPTIONS_KEY] = f"{settings.get(OPTIONS_KEY, '').strip()} {chosen.options}".strip()
    elif chosen.mode == "build":
        atexit.register(start_builder, chosen.archive, builder_settings(settings), java)
    return chosen


def builder_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """The builder's session settings: a local one (:func:`distkeras.spark.session.default_conf`)
    with the user's JVM settings, nothing that reaches a cluster or downloads packages."""
    from .session import default_conf

    conf = default_conf("local[1]", "distkeras-jvm-archive")
    conf.update({k: settings[k] for k in JVM_SETTINGS if settings.get(k)})
    return conf


# --- the builder -------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


def _lock_of(archive: Path) -> Path:
    return archive.with_suffix(".lock")


def _lock_owner(lock: Path) -> int:
    """The pid holding ``lock``, 0 when nobody does (no lock, a dead owner, or a lock so old that
    its pid may have been reused)."""
    try:
        owner = int(lock.read_text().strip() or 0)
        fresh = time.time() - lock.stat().st_mtime < STALE_LOCK_SECONDS
    except (OSError, ValueError):
        return 0
    return owner if owner and fresh and _alive(owner) else 0


def _builder_running(archive: Path) -> bool:
    return bool(_lock_owner(_lock_of(archive)))


def _claim(lock: Path) -> bool:
    """Take the build lock (a file holding our pid); a lock whose owner died is taken over."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_owner(lock):
                return False
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def start_builder(archive: Path, settings: dict[str, str], java: str) -> subprocess.Popen | None:
    """Start the builder in its own session (it outlives this process), unless the archive exists
    or a builder is already at work. Its output goes to ``<archive>.log``."""
    if archive.exists() or _builder_running(archive):
        return None
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        log = open(archive.with_suffix(".log"), "wb")
    except OSError:
        return None
    with log:
        spec = json.dumps({"archive": str(archive), "settings": settings, "java": java})
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "distkeras.spark.jvm_cache", "--build-spec", spec],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:  # at interpreter exit: a note in the log, no traceback on the console
            log.write(f"could not start the builder: {exc}\n".encode())
            return None


def _prune(folder: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest archives (those of an older Spark, JDK or setting)."""
    archives = sorted(folder.glob("*.jsa"), key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for old in archives[keep:]:
        try:
            old.unlink()
            removed.append(old)
        except OSError:
            pass
    return removed


def _workload(spark) -> None:
    """What a distkeras run does first, so the classes it loads are in the archive: SQL and
    Arrow, a ``mapInArrow`` through a Python worker, an Arrow result."""
    import pyarrow as pa

    spark.range(100).selectExpr("id", "cast(id as float) as x").groupBy("id").count().collect()
    table = pa.table({"features": pa.array([[0.0, 1.0]] * 8, pa.list_(pa.float32())), "label": pa.array(range(8), pa.int32())})
    spark.createDataFrame(table).mapInArrow(_identity, "features array<float>, label int").toArrow()


def _identity(batches):
    yield from batches


def build(archive: Path, settings: Mapping[str, str], java: str, timeout: float = 600.0) -> bool:
    """Write the archive now: a small session whose JVM records the classes it loads and writes
    them when it exits; the file is checked, then renamed into place. Returns True on success,
    False when another builder holds the lock or the archive could not be made (no exception:
    sessions simply go on without it)."""
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_of(archive)
    if archive.exists() or not _claim(lock):
        return archive.exists()
    part = archive.with_name(f"{archive.stem}.{os.getpid()}.part")
    try:
        for stale in archive.parent.glob(f"{archive.stem}.*.part"):
            if time.time() - stale.stat().st_mtime > STALE_PART_SECONDS or stale == part:
                stale.unlink()
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        conf = dict(settings)
        conf[OPTIONS_KEY] = f"{conf.get(OPTIONS_KEY, '').strip()} -XX:ArchiveClassesAtExit={part} {QUIET}".strip()
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", conf.get("spark.pyspark.python", sys.executable))
        builder = SparkSession.builder.master("local[1]")
        for key, value in conf.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        _workload(spark)
        spark.stop()
        proc = SparkContext._gateway.proc
        proc.stdin.close()  # the JVM's signal to exit; it writes the archive as it does
        proc.wait(timeout)
        if proc.returncode != 0 or not part.is_file() or part.stat().st_size == 0:
            print(f"the JVM exited with {proc.returncode} and wrote no archive", file=sys.stderr)
            return False
        check = subprocess.run([java, f"-XX:SharedArchiveFile={part}", "-Xshare:auto", QUIET, "-version"], capture_output=True, timeout=120)
        if check.returncode != 0:
            print(f"the archive does not map: {check.stderr.decode(errors='replace')[-2000:]}", file=sys.stderr)
            return False
        os.replace(part, archive)
        print(f"wrote {archive} ({archive.stat().st_size / 2**20:.0f} MiB)", file=sys.stderr)
        _prune(archive.parent, keep=KEEP_ARCHIVES)
        return True
    except Exception as exc:  # reported in the builder's log; sessions go on without an archive
        print(f"could not build {archive}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    finally:
        for leftover in (part, lock):
            try:
                leftover.unlink()
            except OSError:
                pass


def default_plan() -> tuple[CdsPlan, dict[str, str], str]:
    """The plan a default local session of this process would get, its settings and java."""
    from . import session

    java = session.check_java()
    settings = session.default_conf("local[1]")
    return plan(settings, java, session._java_version_text), settings, java


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m distkeras.spark.jvm_cache",
        description="Write (or show) the Spark driver JVM's class-data-sharing archive that distkeras sessions map.",
    )
    p.add_argument("--status", action="store_true", help="only say where the archive is and whether it exists")
    p.add_argument("--build-spec", help=argparse.SUPPRESS)  # the detached builder's own invocation
    args = p.parse_args(argv)
    if args.build_spec:
        spec = json.loads(args.build_spec)
        try:
            os.nice(10)
        except OSError:
            pass
        return 0 if build(Path(spec["archive"]), spec["settings"], spec["java"]) else 1
    chosen, settings, java = default_plan()
    if chosen.archive is None:
        print(f"off: {chosen.why}")
        return 0
    if args.status or chosen.mode == "use":
        state = "present" if chosen.mode == "use" else ("being written" if _builder_running(chosen.archive) else "missing")
        print(f"{chosen.archive}: {state}")
        return 0
    owner = _lock_owner(_lock_of(chosen.archive))
    if owner:
        print(f"{chosen.archive}: being written by process {owner} (see {chosen.archive.with_suffix('.log')})")
        return 0
    print(f"writing {chosen.archive} (about a minute) ...", file=sys.stderr)
    return 0 if build(chosen.archive, settings, java) else 1


if __name__ == "__main__":
    sys.exit(main())
