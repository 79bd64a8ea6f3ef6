"""A multi-host Spark standalone cluster of Linux network namespaces (``NamespaceCluster``),
shared by the whole folder: a driver host (namespace 0: the master and the driver) and two
worker hosts with one core each, every host with its own address and its own loopback.

These tests need Linux, root and ``ip`` (iproute2), plus Java and pyspark. Elsewhere they skip
with the reason; with ``DISTKERAS_REQUIRE_MULTIHOST=1`` (set by ``.ci/run``) a missing
requirement fails them instead, so that CI cannot pass without having run them.

The training scenarios run in ONE driver process (``_scenarios.py``, one SparkSession) on the
first test that asks for them; each test asserts on its scenario's part of the JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow

REQUIRE_ENV = "DISTKERAS_REQUIRE_MULTIHOST"
HOSTS = 2
# the cluster faults last: they kill an executor and stop a host's Python workers
SCENARIOS = os.environ.get("DISTKERAS_MULTIHOST_SCENARIOS", "").split(",") if os.environ.get("DISTKERAS_MULTIHOST_SCENARIOS") else ["smoke", "adag", "localsgd", "adag_shards", "checkpoint_resume", "estimator", "inference", "executor_killed", "hung_sync_worker"]  # fmt: skip


def multihost_unavailable() -> str | None:
    """Why a NamespaceCluster cannot run here, or None when it can."""
    try:
        import pyspark  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        return f"needs pyspark and pyarrow: {exc}"
    from distkeras.spark.errors import SparkUnavailableError
    from distkeras.spark.session import check_java
    from distkeras.spark.testing import check_namespaces

    try:
        check_namespaces()
        check_java()
    except SparkUnavailableError as exc:
        return str(exc).splitlines()[0]
    return None


def need_multihost() -> None:
    """Skip (or, with DISTKERAS_REQUIRE_MULTIHOST=1, fail) when namespaces cannot be made here."""
    reason = multihost_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the multi-host tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"multi-host tests: {reason} (set {REQUIRE_ENV}=1 to make this a failure)")


def alive(pid: int) -> bool:
    """A process with this pid runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def ns_cluster():
    need_multihost()
    from distkeras.spark.testing import NamespaceCluster

    cluster = NamespaceCluster(hosts=HOSTS, cores_per_host=1, memory="1g", backend="jax")
    with cluster:
        yield cluster
        started = {*cluster.spawned, *(pid for ns in cluster.namespaces for pid in cluster.pids_in(ns))}
    left = set(cluster.namespaces) & set(netns_list())
    assert not left, f"namespaces left after the cluster stopped: {left}"
    assert [pid for pid in started if alive(pid)] == [], "processes of the cluster still run after it stopped"


@pytest.fixture(scope="session")
def scenarios(ns_cluster, tmp_path_factory):
    """The report of one run of ``_scenarios.py`` with every scenario (see its docstring)."""
    out_dir = tmp_path_factory.mktemp("multihost-driver")
    # the worker hosts' network namespaces: the fault scenarios touch processes there only (the
    # test session's own Spark processes live in other namespaces of this machine)
    worker_netns = ",".join(f"net:[{ns_cluster.namespace_inode(i)}]" for i in range(1, HOSTS + 1))
    report = ns_cluster.run_driver_json(
        Path(__file__).with_name("_scenarios.py"), ns_cluster.master_url, str(out_dir), ",".join(SCENARIOS), cwd=str(ROOT), timeout=900,
        env={"DISTKERAS_TEST_WORKER_NETNS": worker_netns}
    )
    report["out_dir"] = str(out_dir)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    timings = ", ".join(
        f"{name} {r['seconds']} s" + (f" (accuracy {r['accuracy']:.3f})" if "accuracy" in r else "") for name, r in report["scenarios"].items()
    )
    print(f"\n[multihost] session {report['driver']['session_seconds']:.1f} s; {timings}")  # shown with -s
    return report


@pytest.fixture
def scenario(scenarios):
    """``scenario(name)``: that scenario's result; fails with its error and traceback if it failed."""

    def get(name: str) -> dict:
        result = scenarios["scenarios"].get(name)
        assert result is not None, f"scenario {name!r} did not run; report: {sorted(scenarios['scenarios'])}"
        assert result["ok"], f"scenario {name!r} failed: {result['error']}\n{result.get('traceback', '')}"
        return result

    return get
