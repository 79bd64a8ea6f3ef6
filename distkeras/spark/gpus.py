"""GPUs for the training stage, through Spark's resource scheduling.

Driver side:

- :func:`training_profile` is the stage-level ``ResourceProfile`` of the training stage: each
  task asks for ``gpus_per_worker`` GPUs (and ``spark.task.cpus`` cores). Only that stage asks
  for GPUs; the feed's jobs, evaluation and prediction stay in the default profile, so they keep
  every CPU slot. It is a *task-only* profile (no executor requests): Spark 4 runs those on the
  executors it already has, on standalone, YARN and Kubernetes, without dynamic allocation
  (measured on a standalone cluster with Spark 4.3). Local mode has no resource scheduling.
- :func:`check_gpus` fails fast, before any training task, when the cluster cannot give every
  worker its GPUs at once (a Spark stage asking for resources nobody has waits forever).

Executor side, first thing in the training task, before any backend is imported:

- :func:`pin_task_gpus` reads the task's addresses (``TaskContext.resources()["gpu"]``) and makes
  them the only devices a backend of this Python process will see: ``CUDA_VISIBLE_DEVICES``
  (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so the indices are ``nvidia-smi``'s), JAX without
  preallocating most of the GPU (``XLA_PYTHON_CLIENT_PREALLOCATE=false``), TensorFlow with
  memory growth (``TF_FORCE_GPU_ALLOW_GROWTH=true``).
- Spark reuses Python workers across tasks. A backend reads ``CUDA_VISIBLE_DEVICES`` once, when
  it starts, so a process whose backend started on one GPU cannot move to another. The process
  remembers the addresses it pinned; a later task given other addresses after a backend was
  imported fails with :class:`GpuPinningError` (never trains on a device Spark gave someone
  else), as does a GPU task in a process that imported a backend before any pinning (a CPU stage
  ran Keras there, unrestricted). ``spark.python.worker.reuse=false`` avoids both: every task in
  a fresh process (the backend import, seconds, is paid once per task).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

from distkeras.spark.compat import conf_get
from distkeras.spark.errors import NotEnoughSlotsError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.resource import ResourceProfile
    from pyspark.sql import SparkSession

GPU = "gpu"
#: Modules that read CUDA_VISIBLE_DEVICES when they start; imported before pinning = too late.
BACKEND_MODULES = ("jax", "jaxlib", "tensorflow", "torch", "keras")
#: What pinning sets in the worker process (besides CUDA_VISIBLE_DEVICES).
PIN_ENV = {
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
}
REUSE_CONF = "spark.python.worker.reuse"
EXECUTOR_GPUS_CONF = "spark.executor.resource.gpu.amount"

# The addresses this Python process pinned (None: none yet), and the pid that pinned them (a
# forked child inherits the module state but is a new process).
_pinned: tuple[str, ...] | None = None
_pinned_pid: int | None = None


class GpuConfigError(ValueError):
    """The GPU request cannot work on this Spark application (local mode, executors without GPUs,
    more GPUs per worker than an executor has): fix the configuration."""


class NotEnoughGpusError(NotEnoughSlotsError):
    """The cluster cannot give every worker its GPUs at once."""

    def __init__(self, workers: int, gpus_per_worker: int, slots: int, executor_gpus: int | None):
        self.needed = workers
        self.available = slots
        self.strategy = None
        self.gpus_per_worker = gpus_per_worker
        per_executor = f"{executor_gpus} GPU(s) per executor" if executor_gpus else "executors with GPUs"
        RuntimeError.__init__(
            self,
            f"{workers} workers x {gpus_per_worker} GPU(s) = {workers * gpus_per_worker} GPUs needed at once, but the "
            f"cluster's executors ({per_executor}) can run only {slots} such task(s) at once; lower num_workers or "
            "gpus_per_worker, or add executors with GPUs",
        )


class GpuPinningError(RuntimeError):
    """A Python worker cannot be restricted to the GPU(s) Spark gave its task."""


# --- driver side -------------------------------------------------------------------------------


def check_gpus_per_worker(value: Any) -> int:
    """``gpus_per_worker`` as an int >= 0 (0: no GPUs, the CPU behaviour), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise ValueError(f"gpus_per_worker must be a whole number of GPUs >= 0, got {value!r}")
    if int(value) < 0:
        raise ValueError(f"gpus_per_worker must be >= 0, got {value}")
    return int(value)


def training_profile(spark: "SparkSession", gpus_per_worker: int) -> "ResourceProfile | None":
    """The training stage's task-only ResourceProfile (None for 0 GPUs: the default profile)."""
    if not gpus_per_worker:
        return None
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    cpus = int(float(conf_get(spark, "spark.task.cpus") or 1))
    return ResourceProfileBuilder().require(TaskResourceRequests().cpus(cpus).resource(GPU, int(gpus_per_worker))).build


def _spark_message(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if "Exception:" in line:
            return line.split("Exception:", 1)[1].strip()
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def check_gpus(spark: "SparkSession", profile: "ResourceProfile", num_workers: int, gpus_per_worker: int, wait_s: float = 10.0) -> int:
    """Raise unless every one of ``num_workers`` tasks of ``profile`` can get its GPUs at once:
    :class:`GpuConfigError` for a request no executor can ever meet, :class:`NotEnoughGpusError`
    for too few GPUs in all. Waits up to ``wait_s`` for executors still registering. Returns the
    number of such tasks the cluster can run at once."""
    from distkeras.spark.session import is_local_master

    master = conf_get(spark, "spark.master") or ""
    if is_local_master(master) and not master.startswith("local-cluster"):
        raise GpuConfigError(
            f"gpus_per_worker={gpus_per_worker} needs Spark's resource scheduling, which local mode ({master}) does not "
            "have: run on a cluster manager (standalone, YARN, Kubernetes) whose executors announce their GPUs; the "
            "README's 'GPUs' section shows the configuration (a discovery script, spark.executor.resource.gpu.amount)"
        )
    amount = conf_get(spark, EXECUTOR_GPUS_CONF)
    executor_gpus = int(float(amount)) if amount else 0
    if executor_gpus < 1:
        raise GpuConfigError(
            f"gpus_per_worker={gpus_per_worker}, but the executors have no GPUs: start the Spark application with "
            f"{EXECUTOR_GPUS_CONF}=N (GPUs per executor) and give the cluster's workers a discovery script "
            "(spark.worker.resource.gpu.amount and spark.worker.resource.gpu.discoveryScript on standalone)"
        )
    if gpus_per_worker > executor_gpus:
        raise GpuConfigError(
            f"gpus_per_worker={gpus_per_worker}, but each executor has {executor_gpus} GPU(s) ({EXECUTOR_GPUS_CONF}): "
            "a worker's GPUs come from one executor; lower gpus_per_worker or give executors more GPUs"
        )
    try:
        jsc = spark.sparkContext._jsc.sc()
    except Exception:  # Spark Connect: no JVM handle; Spark's own checks decide
        return num_workers
    manager = jsc.resourceProfileManager()
    try:
        manager.addResourceProfile(profile._java_resource_profile)  # Spark's own validation (idempotent)
    except Exception as exc:
        raise GpuConfigError(f"Spark refuses a training stage with {gpus_per_worker} GPU(s) per task: {_spark_message(exc)}") from exc
    jprofile = manager.resourceProfileFromId(profile.id)
    deadline = time.monotonic() + wait_s
    while True:
        slots = int(jsc.maxNumConcurrentTasks(jprofile))
        if slots >= num_workers:
            return slots
        if time.monotonic() >= deadline:
            raise NotEnoughGpusError(num_workers, gpus_per_worker, slots, executor_gpus)
        time.sleep(0.25)


def warn_if_workers_reused(spark: "SparkSession", gpus_per_worker: int) -> None:
    """Warn when Python workers are reused and an executor has GPUs for several tasks: a later
    task of this application may then land in a process pinned to another GPU and fail."""
    reuse = (conf_get(spark, REUSE_CONF) or "true").lower() != "false"
    amount = conf_get(spark, EXECUTOR_GPUS_CONF)
    if reuse and amount and int(float(amount)) > gpus_per_worker:
        warnings.warn(
            f"{REUSE_CONF} is on and each executor has {amount} GPUs for tasks of {gpus_per_worker}: a Python worker "
            "keeps the GPU it first trained on, so a later training task given another GPU in that process fails "
            f"(GpuPinningError); start the application with {REUSE_CONF}=false for GPU training",
            stacklevel=3,
        )


def write_discovery_script(path: str, addresses: list[str] | None = None) -> str:
    """Write a Spark GPU discovery script to ``path`` and return its absolute path. With
    ``addresses`` it announces exactly those (fake GPUs for tests); without, the GPUs
    ``nvidia-smi`` lists (their indices)."""
    if addresses is None:
        body = (
            "ADDRS=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, | sed 's/,/\\\",\\\"/g')\n"
            'echo "{\\"name\\": \\"gpu\\", \\"addresses\\": [\\"$ADDRS\\"]}"\n'
        )
    else:
        body = "cat <<'JSON'\n" + json.dumps({"name": GPU, "addresses": [str(a) for a in addresses]}) + "\nJSON\n"
    with open(path, "w") as f:
        f.write("#!/bin/bash\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return os.path.abspath(path)


def visible_gpus() -> list[str]:
    """The indices of the NVIDIA GPUs ``nvidia-smi`` lists on this machine ([] without any)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    proc = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


# --- executor side -----------------------------------------------------------------------------


def task_gpu_addresses() -> list[str]:
    """The GPU addresses Spark gave the running task ([] outside a task or without GPUs)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return []
    info = ctx.resources().get(GPU)
    return sorted((str(a) for a in info.addresses), key=lambda a: (len(a), a)) if info is not None else []


def pin(addresses: list[str]) -> dict[str, Any]:
    """Make ``addresses`` the only GPUs this process's backend will see; returns the record the
    worker's summary keeps (``gpus``, ``cuda_visible_devices``, the backend modules already
    imported when pinning, the process id). Raises :class:`GpuPinningError` if a backend of this
    process already started without these GPUs."""
    global _pinned, _pinned_pid
    wanted = tuple(str(a) for a in addresses)
    value = ",".join(wanted)
    pid = os.getpid()
    pinned = _pinned if _pinned_pid == pid else None
    imported = [m for m in BACKEND_MODULES if m in sys.modules]
    if imported and pinned != wanted and not (pinned is None and os.environ.get("CUDA_VISIBLE_DEVICES") == value):
        before = f"was pinned to GPU(s) {','.join(pinned)}" if pinned is not None else "was not restricted to any GPU"
        raise GpuPinningError(
            f"Spark gave this task GPU(s) {value}, but its Python worker (pid {pid}) already imported "
            f"{', '.join(imported)} and {before}: a backend sees only the GPUs it saw when it started, so this process "
            f"cannot train on {value}. Spark reused the Python worker of an earlier task; start the application with "
            f"{REUSE_CONF}=false for GPU training (every task in a fresh process)"
        )
    os.environ["CUDA_VISIBLE_DEVICES"] = value
    os.environ.update(PIN_ENV)
    _pinned, _pinned_pid = wanted, pid
    return {"gpus": list(wanted), "cuda_visible_devices": value, "imported_before_pin": imported, "pid": pid}


def pin_task_gpus(gpus_per_worker: int) -> dict[str, Any]:
    """:func:`pin` the running task's GPUs; :class:`GpuPinningError` if Spark gave it fewer than
    ``gpus_per_worker``."""
    addresses = task_gpu_addresses()
    if len(addresses) < gpus_per_worker:
        raise GpuPinningError(f"the task asked for {gpus_per_worker} GPU(s) but Spark gave it {addresses or 'none'}")
    return pin(addresses)


def backend_devices(backend: str | None = None) -> list[str]:
    """The devices a Keras backend computes on, as ``platform:index`` (``["gpu:0"]``,
    ``["cpu:0"]``); ``backend`` defaults to the imported Keras's."""
    if backend is None and "keras" in sys.modules:
        backend = sys.modules["keras"].backend.backend()
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.id}" for d in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return [f"{d.device_type.lower()}:{d.name.rsplit(':', 1)[-1]}" for d in found]
    if backend == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu:0"]
    return []


def device_record(placement: dict[str, Any], backend: str | None = None) -> dict[str, Any]:
    """``placement`` (from :func:`pin`) with what the backend sees once it has started
    (``backend_devices``) and ``CUDA_VISIBLE_DEVICES`` as it is then."""
    devices = backend_devices(backend)
    return {**placement, "cuda_visible_devices_after": os.environ.get("CUDA_VISIBLE_DEVICES"), "backend_devices": devices}
