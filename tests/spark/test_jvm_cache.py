"""distkeras.spark.jvm_cache: the driver JVM's class-data-sharing archive.

The plan (use / build / off) and the build lock are checked directly; the whole chain runs for
real once: a session without an archive leaves a builder behind at its exit, the builder writes
the archive, and the next session's JVM loads Spark's classes from it (its class-loading log says
so) with the user's own Java options kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distkeras.spark import jvm_cache as C

ROOT = Path(__file__).resolve().parents[2]
JAVA = "/usr/bin/java"
VERSION = 'openjdk version "17.0.15"'


def _plan(tmp_path, settings=None, **env):
    environ = {C.ENV_SPARK_CDS: str(tmp_path / "cds"), **env}
    return C.plan(settings or {}, JAVA, VERSION, environ)


def test_no_archive_yet_means_build_and_no_options(tmp_path):
    plan = _plan(tmp_path)
    assert plan.mode == "build" and plan.options == ""
    assert plan.archive.parent == tmp_path / "cds" and plan.archive.suffix == ".jsa"


def test_an_archive_is_mapped_quietly(tmp_path):
    archive = _plan(tmp_path).archive
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"x")
    plan = _plan(tmp_path)
    assert plan.mode == "use"
    assert plan.options == f"-XX:SharedArchiveFile={archive} -Xlog:cds*=off"


def test_a_part_file_or_an_empty_archive_is_never_mapped(tmp_path):
    archive = _plan(tmp_path).archive
    archive.parent.mkdir(parents=True)
    archive.with_name(f"{archive.stem}.123.part").write_bytes(b"half an archive")
    archive.write_bytes(b"")
    assert _plan(tmp_path).mode == "build"


@pytest.mark.parametrize(
    "settings, env, why",
    [
        ({}, {C.ENV_SPARK_CDS: "0"}, "turns it off"),
        ({C.OPTIONS_KEY: "-Xshare:off"}, {}, "already choose"),
        ({C.OPTIONS_KEY: "-XX:SharedArchiveFile=/x.jsa"}, {}, "already choose"),
        ({}, {"PYSPARK_SUBMIT_ARGS": "--driver-java-options -Xmx2g pyspark-shell"}, "PYSPARK_SUBMIT_ARGS"),
        ({}, {"PYSPARK_GATEWAY_PORT": "4040"}, "someone else"),
    ],
)
def test_left_alone(tmp_path, settings, env, why):
    environ = {C.ENV_SPARK_CDS: str(tmp_path / "cds"), **env}
    plan = C.plan(settings, JAVA, VERSION, environ)
    assert plan.mode == "off" and why in plan.why


def test_java_options_in_spark_defaults_are_left_alone(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text("# site settings\nspark.driver.extraJavaOptions -Dsite=1\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(conf))
    assert _plan(tmp_path).mode == "off"
    (conf / "spark-defaults.conf").write_text("spark.executor.memory 2g\n")
    assert _plan(tmp_path).mode == "build"


def test_the_key_follows_what_the_archive_depends_on(tmp_path):
    home = tmp_path / "spark"
    (home / "jars").mkdir(parents=True)
    (home / "jars" / "spark-core_2.13-4.0.0.jar").write_bytes(b"1")
    key = C.archive_key(JAVA, VERSION, home, {})
    assert key == C.archive_key(JAVA, VERSION, home, {"spark.app.name": "other"})  # not a JVM setting
    assert key != C.archive_key(JAVA, 'openjdk version "21.0.2"', home, {})
    assert key != C.archive_key(JAVA, VERSION, home, {"spark.driver.extraClassPath": "/opt/x.jar"})
    assert key != C.archive_key(JAVA, VERSION, home, {C.OPTIONS_KEY: "-XX:+UseSerialGC"})
    assert key == C.archive_key(JAVA, VERSION, home, {"spark.driver.memory": "4g"})  # same JVM layout
    assert key != C.archive_key(JAVA, VERSION, home, {"spark.driver.memory": "48g"})  # no compressed pointers
    (home / "jars" / "spark-core_2.13-4.0.1.jar").write_bytes(b"1")  # an upgraded Spark
    assert key != C.archive_key(JAVA, VERSION, home, {})


def test_one_builder_at_a_time_and_a_dead_owner_is_taken_over(tmp_path):
    lock = tmp_path / "k.lock"
    assert C._claim(lock)
    assert lock.read_text() == str(os.getpid())
    assert not C._claim(lock)  # held by a live process (this one)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(str(dead.pid))
    assert C._claim(lock)
    assert lock.read_text() == str(os.getpid())
    old = time.time() - 2 * C.STALE_LOCK_SECONDS  # a live pid in an hours-old lock may be anyone's now
    os.utime(lock, (old, old))
    assert not C._builder_running(lock.with_suffix(".jsa")) and C._claim(lock)


@pytest.mark.parametrize("text, size", [("4g", 4 * 2**30), ("512m", 512 * 2**20), ("1024", 2**30), ("2G", 2 * 2**30), ("", 0), ("lots", 0)])
def test_heap_sizes_read_as_spark_does(text, size):
    assert C._heap_bytes(text) == size


def test_only_the_newest_archives_are_kept(tmp_path):
    for i, name in enumerate(["a", "b", "c", "d"]):
        (tmp_path / f"{name}.jsa").write_bytes(b"x")
        os.utime(tmp_path / f"{name}.jsa", (1000 + i, 1000 + i))
    removed = C._prune(tmp_path, keep=3)
    assert [p.name for p in removed] == ["a.jsa"]
    assert sorted(p.name for p in tmp_path.glob("*.jsa")) == ["b.jsa", "c.jsa", "d.jsa"]


def test_builder_settings_keep_only_the_jvm_settings():
    user = {C.OPTIONS_KEY: "-Dx=1", "spark.driver.extraClassPath": "/opt/a.jar", "spark.driver.memory": "6g", "spark.jars.packages": "org:x:1", "spark.executor.memory": "8g"}
    conf = C.builder_settings(user)
    assert conf[C.OPTIONS_KEY] == "-Dx=1" and conf["spark.driver.extraClassPath"] == "/opt/a.jar" and conf["spark.driver.memory"] == "6g"
    assert "spark.jars.packages" not in conf and "spark.executor.memory" not in conf  # nothing downloaded or sized


# A session as a user starts it, with an option of their own that also logs where classes come from.
SESSION = r"""
import json, sys
from distkeras.spark.session import get_or_create_session, startup_record
spark = get_or_create_session("local[1]", app_name="cds-test", conf={"spark.driver.extraJavaOptions": sys.argv[1]})
assert spark.range(10).count() == 10
print(json.dumps({"jvm_archive": startup_record(spark)["jvm_archive"]}))
spark.stop()
"""


def _session(cds: Path, log: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), DISTKERAS_SPARK_CDS=str(cds), DISTKERAS_WARMUP="0")
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", SESSION, f"-Xlog:class+load=info:file={log}"], env=env, capture_output=True, text=True, timeout=600, cwd=str(ROOT)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_first_session_leaves_an_archive_that_the_next_one_maps(tmp_path):
    pytest.importorskip("pyspark")
    from distkeras.spark.session import check_java

    check_java()
    cds, log = tmp_path / "cds", tmp_path / "classes.log"
    first = _session(cds, log)
    assert first["jvm_archive"] == "build"
    assert "source: shared objects file (top)" not in log.read_text()
    deadline = time.monotonic() + 400  # the builder runs after the session's process ended
    while not list(cds.glob("*.jsa")) and time.monotonic() < deadline:
        time.sleep(2)
    archives = list(cds.glob("*.jsa"))
    builder_log = "".join(p.read_text(errors="replace") for p in cds.glob("*.log"))
    assert len(archives) == 1, builder_log[-3000:]
    deadline = time.monotonic() + 60
    while list(cds.glob("*.lock")) and time.monotonic() < deadline:  # the builder tidies up last
        time.sleep(0.5)
    assert not list(cds.glob("*.part")) and not list(cds.glob("*.lock"))

    second = _session(cds, log)
    assert second["jvm_archive"] == "use"
    lines = log.read_text().splitlines()
    shared = [line for line in lines if "source: shared objects file (top)" in line]
    assert len(shared) > 1000, (len(shared), len(lines))  # Spark's own classes came from the archive
    assert any("org.apache.spark" in line for line in shared)
