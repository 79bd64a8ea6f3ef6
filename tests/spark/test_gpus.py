"""GPUs through Spark's resource scheduling, without GPUs: a standalone worker on 127.0.0.1
announces the fake GPUs "0" and "1" through a discovery script; training on them runs on the
CPU (the backends find no CUDA device), which is all these tests need.

The cluster runs one application (``_gpu_job.py``, its own process): ADAG with 2 workers x 1
GPU, requests the cluster cannot meet, and the Python-worker reuse guard. The pinning itself
(environment, guard, a backend on the CPU under a pinned ``CUDA_VISIBLE_DEVICES``) is tested in
child processes, the option's plumbing without Spark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, child_env, run_json_script

HERE = Path(__file__).parent


# --- without Spark ------------------------------------------------------------------------------


def test_gpus_per_worker_is_checked_early():
    from distkeras.spark.gpus import check_gpus_per_worker

    assert check_gpus_per_worker(0) == 0 and check_gpus_per_worker(2) == 2 and check_gpus_per_worker(1.0) == 1
    for bad in (-1, 1.5, "1", True, None):
        with pytest.raises(ValueError, match="gpus_per_worker"):
            check_gpus_per_worker(bad)


def test_trainer_and_estimator_and_cli_take_the_option():
    pytest.importorskip("keras")
    from distkeras.frontends.cli import build_parser
    from distkeras.frontends.estimator import KerasEstimator
    from distkeras.frontends.trainers import TRAINERS, make_trainer
    from distkeras.spark.runner import RunOptions
    from tests.training import make_mlp

    import inspect

    assert all("gpus_per_worker" in inspect.signature(cls.__init__).parameters for cls in TRAINERS.values())
    trainer = make_trainer("easgd", make_mlp(), num_workers=2, gpus_per_worker=1)
    assert trainer._options().gpus_per_worker == 1 and RunOptions().gpus_per_worker == 0
    with pytest.raises(ValueError, match="gpus_per_worker must be >= 0"):
        make_trainer("adag", make_mlp(), gpus_per_worker=-1)
    est = KerasEstimator(model=make_mlp(), gpusPerWorker=2)
    assert est.getGpusPerWorker() == 2 and est._trainer(None).gpus_per_worker == 2
    args = build_parser().parse_args(["train", "--gpus-per-worker", "1"])
    assert args.gpus_per_worker == 1


def test_discovery_script_announces_the_addresses(tmp_path):
    from distkeras.spark.gpus import write_discovery_script

    script = write_discovery_script(str(tmp_path / "gpus.sh"), ["0", "1"])
    out = subprocess.run([script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"name": "gpu", "addresses": ["0", "1"]}
    fake = tmp_path / "bin" / "nvidia-smi"  # the nvidia-smi form, with a stand-in listing 3 GPUs
    fake.parent.mkdir()
    fake.write_text("#!/bin/bash\nprintf '0\\n1\\n2\\n'\n")
    fake.chmod(0o755)
    script = write_discovery_script(str(tmp_path / "real.sh"))
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    out = subprocess.run([script], capture_output=True, text=True, check=True, env=env).stdout
    assert json.loads(out) == {"name": "gpu", "addresses": ["0", "1", "2"]}


_PIN_JAX = """
import json, os, sys
from distkeras.spark import gpus
first = gpus.pin(["1"])
import jax, jax.numpy as jnp
total = float(jnp.sum(jnp.ones(3)))          # the backend works on the CPU under CUDA_VISIBLE_DEVICES=1
again = gpus.pin(["1"])                       # the same GPU again (a reused worker): fine
try:
    gpus.pin(["0"])
    other = None
except gpus.GpuPinningError as exc:
    other = str(exc)
env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_PREALLOCATE", "TF_FORCE_GPU_ALLOW_GROWTH", "CUDA_DEVICE_ORDER")}
print(json.dumps({"first": first, "again": again, "other": other, "total": total, "env": env, "devices": gpus.backend_devices("jax")}))
"""

_IMPORTED_FIRST = """
import json
import jax
from distkeras.spark import gpus
try:
    gpus.pin(["0"])
    print(json.dumps(None))
except gpus.GpuPinningError as exc:
    print(json.dumps(str(exc)))
"""

_PIN_TF = """
import json
from distkeras.spark import gpus
gpus.pin(["1"])
import tensorflow as tf
print(json.dumps({"sum": float(tf.reduce_sum(tf.ones(3))), "devices": gpus.backend_devices("tensorflow")}))
"""


def _child(code: str, **env: str):
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(**env), cwd=str(ROOT), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pinning_restricts_the_backend_and_refuses_another_gpu_later():
    pytest.importorskip("jax")
    out = _child(_PIN_JAX, KERAS_BACKEND="jax")
    assert out["first"]["gpus"] == ["1"] and out["first"]["imported_before_pin"] == []
    assert out["env"] == {"CUDA_VISIBLE_DEVICES": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert out["total"] == 3.0 and out["devices"] == ["cpu:0"]  # no CUDA here: JAX runs on the CPU
    assert "jax" in out["again"]["imported_before_pin"]
    assert out["other"] is not None
    assert "GPU(s) 0" in out["other"] and "pinned to GPU(s) 1" in out["other"] and "spark.python.worker.reuse=false" in out["other"]


def test_a_backend_imported_before_pinning_is_refused():
    pytest.importorskip("jax")
    message = _child(_IMPORTED_FIRST, KERAS_BACKEND="jax")
    assert message is not None and "already imported jax" in message and "was not restricted to any GPU" in message


def test_tensorflow_runs_on_the_cpu_under_a_pinned_gpu():
    pytest.importorskip("tensorflow")
    out = _child(_PIN_TF, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    assert out["sum"] == 3.0 and out["devices"] == ["cpu:0"]


def test_local_mode_has_no_gpus(spark):
    from distkeras.spark.gpus import GpuConfigError, check_gpus, training_profile

    with pytest.raises(GpuConfigError, match="local mode"):
        check_gpus(spark, training_profile(spark, 1), 2, 1)


# --- a standalone cluster with fake GPUs --------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_run():
    """One application on a standalone cluster whose worker announces GPUs "0" and "1"."""
    from tests.conftest import _need_spark

    _need_spark()
    from distkeras.spark.testing import LocalStandaloneCluster

    with LocalStandaloneCluster(cores=2, memory="2g", gpus=["0", "1"]) as cluster:
        yield run_json_script(HERE / "_gpu_job.py", cluster.master_url, env=child_env(KERAS_BACKEND="jax"), timeout=600)


@pytest.mark.slow
def test_each_worker_trains_on_its_own_gpu(gpu_run):
    workers = gpu_run["workers"]
    assert [w["worker"] for w in workers] == [0, 1]
    assert sorted(w["device"]["gpus"][0] for w in workers) == ["0", "1"]  # distinct addresses
    for w in workers:
        device = w["device"]
        assert device["pid"] == w["pid"]
        # set before the backend was imported in that Python worker, and what the backend then saw
        assert device["imported_before_pin"] == []
        assert device["cuda_visible_devices"] == device["cuda_visible_devices_after"] == device["gpus"][0]
        assert device["backend_devices"] == ["cpu:0"]  # fake GPUs: no CUDA, JAX trains on the CPU
    assert gpu_run["history_devices"] == {str(w["worker"]): w["device"]["gpus"] for w in workers}
    assert gpu_run["commits"] > 0 and gpu_run["training_jobs"] > 0


@pytest.mark.slow
def test_more_gpus_than_the_cluster_has_fail_before_training(gpu_run):
    three = gpu_run["three_gpus"]  # 3 GPUs per worker, executors have 2
    assert three["type"] == "GpuConfigError" and "gpus_per_worker=3" in three["message"] and "2 GPU(s)" in three["message"]
    assert three["jobs"] == 0  # no Spark job ran for it
    workers = gpu_run["three_workers"]  # 3 workers x 1 GPU, 2 GPUs in all
    assert workers["type"] == "NotEnoughGpusError" and "NotEnoughSlotsError" in workers["mro"]
    assert "3 GPUs needed at once" in workers["message"] and "only 2" in workers["message"]
    assert workers["jobs"] == 0


@pytest.mark.slow
def test_a_reused_python_worker_never_trains_on_another_gpu(gpu_run):
    """After the training, each idle Python worker is pinned to one GPU; later GPU tasks land in
    them whichever GPU Spark gave the task. A worker never trains on a second GPU: the task is
    refused with a GpuPinningError naming the process and both GPUs."""
    import re

    pinned = {w["pid"]: w["device"]["gpus"] for w in gpu_run["workers"]}
    jobs = gpu_run["guard"]["jobs"]
    for job in jobs:
        if job["type"] is None:  # each task landed in a worker pinned to its own GPU, or a fresh one
            for record in job["value"]:
                assert pinned.setdefault(record["pid"], record["gpus"]) == record["gpus"]
    refused = jobs[-1]
    assert refused["type"] is not None, f"in {len(jobs)} jobs Spark never gave a pinned worker another GPU: {jobs}"
    message = refused["message"]
    assert "GpuPinningError" in message and "spark.python.worker.reuse=false" in message
    m = re.search(r"Spark gave this task GPU\(s\) (\S+), but its Python worker \(pid (\d+)\) already imported .* pinned to GPU\(s\) (\S+):", message)
    assert m, message
    given, pid, was = m.group(1), int(m.group(2)), m.group(3)
    assert given != was and pinned.get(pid) == [was]
