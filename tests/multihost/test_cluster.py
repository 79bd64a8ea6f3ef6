"""The namespace cluster itself: its shape, the isolation of its hosts, that tasks run on the
worker hosts, and that everything it creates goes away (after a clean stop, an exception or an
interrupt in the with-body, and a failed start)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.multihost.conftest import HOSTS, alive, need_multihost, netns_list

pytestmark = pytest.mark.slow


def test_cluster_shape(ns_cluster):
    assert len(ns_cluster.namespaces) == HOSTS + 1
    assert set(ns_cluster.namespaces) <= set(netns_list())
    assert ns_cluster.host_addresses == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert ns_cluster.master_url == "spark://192.0.2.1:7077"
    status = ns_cluster.status()
    assert status is not None and status["status"] == "ALIVE"
    workers = sorted((w["host"], w["state"], w["cores"]) for w in status["workers"])
    assert workers == [("192.0.2.2", "ALIVE", 1), ("192.0.2.3", "ALIVE", 1)]
    # each host holds its own address (and loopback) only
    for i, ns in enumerate(ns_cluster.namespaces):
        out = ns_cluster.exec_in(ns, ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
        addresses = sorted(line.split()[3] for line in out.splitlines())
        assert addresses == sorted(["127.0.0.1/8", f"{ns_cluster.host_addresses[i]}/24"]), (ns, out)


def test_each_host_has_its_own_loopback(ns_cluster):
    """From a worker host, the master answers at the driver host's address but not at
    127.0.0.1: that loopback is the worker host's own (as on a real cluster)."""
    probe = (
        "import socket, sys\n"
        "for host in sys.argv[1:]:\n"
        "    try:\n"
        "        socket.create_connection((host, 7077), timeout=5).close(); print(host, 'open')\n"
        "    except OSError as exc:\n"
        "        print(host, type(exc).__name__)\n"
    )
    out = ns_cluster.exec_in(1, [sys.executable, "-c", probe, ns_cluster.driver_address, "127.0.0.1"], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [f"{ns_cluster.driver_address} open", "127.0.0.1 ConnectionRefusedError"], out


def test_tasks_run_on_the_worker_hosts(ns_cluster, scenario, scenarios):
    """A plain Spark job from the driver in namespace 0: every task ran in a worker host's
    namespace, reaching the driver from that host's address; both worker hosts got tasks."""
    driver = scenarios["driver"]
    assert driver["address"] == ns_cluster.driver_address
    assert driver["netns"] == f"net:[{ns_cluster.namespace_inode(0)}]"
    assert sorted(e.split(":")[0] for e in driver["executors"]) == ns_cluster.worker_addresses
    netns_of_host = {f"net:[{ns_cluster.namespace_inode(i)}]": addr for i, addr in enumerate(ns_cluster.host_addresses)}
    tasks = scenario("smoke")["tasks"]
    assert sorted(t["partition"] for t in tasks) == list(range(len(tasks)))
    assert sum(t["rows"] for t in tasks) == 100
    for t in tasks:
        assert t["address"] in ns_cluster.worker_addresses, t
        assert netns_of_host.get(t["netns"]) == t["address"], t  # the namespace holding that address
        assert t["spark_local_ip"] == t["address"], t
    assert {t["address"] for t in tasks} == set(ns_cluster.worker_addresses)


def test_stop_removes_everything_after_an_interrupt_in_the_body():
    """KeyboardInterrupt in the with-body: the cluster's namespaces are gone from `ip netns
    list`, and no process it started or that ran in its namespaces is alive (a detached
    process it never tracked included). stop() again is a no-op."""
    need_multihost()
    from distkeras.spark.testing import NamespaceCluster

    cluster = NamespaceCluster(hosts=1, cores_per_host=1, memory="512m")
    with pytest.raises(KeyboardInterrupt):
        with cluster:
            assert set(cluster.namespaces) <= set(netns_list())
            out = cluster.exec_in(1, ["sh", "-c", "setsid sleep 600 >/dev/null 2>&1 </dev/null & echo $!"], capture_output=True, text=True, check=True)
            stray = int(out.stdout)
            inside = cluster.pids_in(0) + cluster.pids_in(1)
            assert stray in inside and len(inside) >= 3  # master, worker, the stray
            started = list(cluster.spawned)
            raise KeyboardInterrupt
    assert not set(cluster.namespaces) & set(netns_list())
    assert [p for p in [*started, *inside] if alive(p)] == []
    assert cluster.tmpdir is None and cluster.procs == {}
    cluster.stop()


def test_failed_start_cleans_up():
    """A worker that cannot start (bad --memory): start() raises with the worker's log, and
    removes what it made."""
    need_multihost()
    from distkeras.spark.errors import SparkUnavailableError
    from distkeras.spark.testing import NamespaceCluster

    cluster = NamespaceCluster(hosts=1, memory="lots", start_timeout=90)
    with pytest.raises(SparkUnavailableError) as info:
        cluster.start()
    text = str(info.value)
    assert "the standalone worker1 exited with code" in text and "Usage: Worker" in text, text[:3000]
    assert not set(cluster.namespaces) & set(netns_list())
    assert cluster.spawned and [p for p in cluster.spawned if alive(p)] == []


def test_start_failing_midway_removes_only_what_it_made():
    """A namespace of the same name already exists (not ours): start() fails while making the
    network, removes the namespace it had made, and leaves the other one alone."""
    need_multihost()
    from distkeras.spark.testing import NamespaceCluster, NamespaceUnavailableError

    cluster = NamespaceCluster(hosts=2)
    taken = cluster.namespaces[1]
    subprocess.run(["ip", "netns", "add", taken], check=True)
    try:
        with pytest.raises(NamespaceUnavailableError, match=f"netns add {taken}.*exists"):
            cluster.start()
        names = set(netns_list())
        assert cluster.namespaces[0] not in names and cluster.namespaces[2] not in names
        assert taken in names
        assert cluster.tmpdir is None and cluster.spawned == []
    finally:
        subprocess.run(["ip", "netns", "del", taken], check=True)


def test_clear_error_without_root_or_ip(monkeypatch):
    """Without root, or without `ip` on PATH, start() says which is missing (before creating
    anything); the error is a SparkUnavailableError, so callers that skip without Spark skip."""
    from distkeras.spark.errors import SparkUnavailableError
    from distkeras.spark.testing import NamespaceCluster, NamespaceUnavailableError

    assert issubclass(NamespaceUnavailableError, SparkUnavailableError)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    with pytest.raises(NamespaceUnavailableError) as info:
        NamespaceCluster(hosts=1).start()
    assert "needs root" in str(info.value) and "uid 1000" in str(info.value) and "`ip`" not in str(info.value)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(NamespaceUnavailableError) as info:
        NamespaceCluster(hosts=1).start()
    assert "needs root" in str(info.value) and "the `ip` command from iproute2" in str(info.value)
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    with pytest.raises(NamespaceUnavailableError) as info:
        NamespaceCluster(hosts=1).start()
    assert "root" not in str(info.value) and "the `ip` command from iproute2 (not found on PATH" in str(info.value)


def test_require_env_turns_the_skip_into_a_failure(monkeypatch):
    """Where namespaces cannot be made, the folder skips, unless DISTKERAS_REQUIRE_MULTIHOST=1
    (CI) makes that a failure naming what is missing."""
    from tests.multihost.conftest import REQUIRE_ENV

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"multi-host tests: a NamespaceCluster needs root .*set DISTKERAS_REQUIRE_MULTIHOST=1"):
        need_multihost()
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"DISTKERAS_REQUIRE_MULTIHOST=1 but the multi-host tests cannot run: a NamespaceCluster needs root"):
        need_multihost()
