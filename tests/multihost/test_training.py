"""Training across hosts: the driver (and its parameter server) in the driver host's namespace,
two workers on two worker hosts. Each test reads its scenario's result from the one driver run
of ``_scenarios.py`` (see conftest)."""

from __future__ import annotations

import json

import pytest

from tests.multihost.conftest import HOSTS

pytestmark = pytest.mark.slow

MIN_ACCURACY = 0.85


def assert_on_worker_hosts(ns_cluster, workers):
    """One worker per worker host: each worker's Python process ran in a different worker
    host's network namespace, none on the driver host."""
    assert [w["worker"] for w in workers] == list(range(HOSTS)), workers
    hosts = {f"net:[{ns_cluster.namespace_inode(i)}]" for i in range(1, HOSTS + 1)}
    assert sorted(w["netns"] for w in workers) == sorted(hosts), (workers, hosts)


def assert_ps_on_driver_host(ns_cluster, r, shards=1):
    """By default the parameter server advertises the driver's address as Spark knows it (the
    driver host's, not loopback), listens there, and speaks TLS."""
    assert len(r["ps_advertised"]) == shards, r
    for advertised, bound in zip(r["ps_advertised"], r["ps_bound"]):
        assert advertised.rsplit(":", 1)[0] == ns_cluster.driver_address, r
        assert bound.rsplit(":", 1)[0] == ns_cluster.driver_address, r
    # beyond loopback the wire is TLS by default (the workers pinned the run's certificate)
    assert r["ps_tls"] == [True] * shards, r


def test_adag_across_hosts(ns_cluster, scenario):
    r = scenario("adag")
    assert r["accuracy"] >= MIN_ACCURACY, r
    assert r["commits_applied"] > 0
    assert_on_worker_hosts(ns_cluster, r["workers"])
    assert_ps_on_driver_host(ns_cluster, r)


def test_localsgd_across_hosts(ns_cluster, scenario):
    r = scenario("localsgd")
    assert r["accuracy"] >= MIN_ACCURACY, r
    assert r["commits_applied"] > 0 and r["commits_applied"] % HOSTS == 0  # whole rounds
    assert_on_worker_hosts(ns_cluster, r["workers"])
    assert_ps_on_driver_host(ns_cluster, r)


def test_sharded_parameter_server_across_hosts(ns_cluster, scenario):
    r = scenario("adag_shards")
    assert r["shards"] == 2
    assert r["accuracy"] >= MIN_ACCURACY, r
    assert_on_worker_hosts(ns_cluster, r["workers"])
    assert_ps_on_driver_host(ns_cluster, r, shards=2)


def test_checkpoint_then_resume(ns_cluster, scenario):
    r = scenario("checkpoint_resume")
    assert r["checkpoint_files"] == ["shard-00.npz"]
    assert r["checkpoint_strategy"] == "adag"
    # the final checkpoint holds the first run's end state
    assert r["checkpoint_equals_final_center"]
    assert r["checkpoint_clock"] == r["first_commits_applied"] > 0
    # the second run resumes from it: its server's clock goes on from the checkpoint's
    assert r["second_clock"] == r["checkpoint_clock"] + r["second_commits_applied"] > r["checkpoint_clock"]
    assert r["accuracy"] >= MIN_ACCURACY, r
    assert_on_worker_hosts(ns_cluster, r["workers"])


def test_estimator_fit_transform_across_hosts(scenario):
    r = scenario("estimator")
    assert {"features", "label", "prediction", "predicted_label"} <= set(r["columns"])
    assert r["probs_shape"] == [r["rows"], 10] and r["rows"] > 0
    assert r["accuracy"] >= MIN_ACCURACY, r
    assert r["fit_accuracy"] == pytest.approx(r["accuracy"], abs=1e-9)


def test_predict_and_evaluate_across_hosts(scenario):
    r = scenario("inference")
    assert r["labels_in_order"] and r["predicted_label_is_argmax"]
    assert r["max_abs_diff"] is not None and r["max_abs_diff"] < 1e-5
    assert r["accuracy"] == r["expected_accuracy"] >= MIN_ACCURACY
    assert r["evaluate"]["accuracy"] == pytest.approx(r["expected_accuracy"], abs=1e-6)


def test_cli_train_across_hosts(ns_cluster, tmp_path):
    """`python -m distkeras train --master spark://<driver host>` run inside the driver host."""
    out = tmp_path / "out"
    proc = ns_cluster.run_in_driver_host(
        [ns_cluster.python, "-m", "distkeras", "train", "--master", ns_cluster.master_url, "--quiet", "--json", "--epochs", "5", "--workers", str(HOSTS),
         "--conf", "spark.executor.memory=512m", "--out", str(out)],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["test_accuracy"] >= MIN_ACCURACY, result
    assert (out / "model.keras").is_file()


def test_an_executor_killed_mid_run_is_survived_without_double_applies(ns_cluster, scenario):
    """SIGKILL of one worker host's executor JVM while ADAG trains: Spark retries the lost task on
    a new executor (often in a new stage attempt, after re-running the shuffle its executor held,
    where Spark's attemptNumber() is 0 again); the retry registers with a newer task attempt id,
    which fences off the dead attempt; the run finishes with every commit applied once."""
    r = scenario("executor_killed")
    assert r["killed"], r  # an executor was running on a worker host and was killed
    before = {str(w): int(a) for w, a in r["seen"]["attempts_before"].items()}
    after = {w: v["attempt"] for w, v in r["server_workers"].items()}
    retried = [w for w in after if after[w] != before.get(w)]
    assert len(retried) == 1, (before, after, r)  # exactly the lost task ran again
    (w,) = retried
    assert after[w] == r["fencing_attempts"][w] > before[w]  # the server moved on to the retry
    assert r["duplicates"] == 0
    # the other worker's commits applied exactly once each; the retried one's: its own plus what
    # the dead attempt got in before it was fenced off
    other = next(x for x in after if x != w)
    assert r["server_workers"][other]["commits"] == r["recorded_commits"][other]
    assert r["server_workers"][w]["commits"] >= r["recorded_commits"][w]
    assert r["accuracy"] >= MIN_ACCURACY, r


def test_a_hung_worker_in_a_synchronous_round_ends_the_run_naming_it(scenario):
    r = scenario("hung_sync_worker")
    assert r["stopped"], r
    err = r["error"]
    assert err is not None and err["type"] == "WorkerError", r
    assert "did not close within 10s: still waiting for worker" in err["message"], err
    assert r["seconds_to_fail"] < 240, r
