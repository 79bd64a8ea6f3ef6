"""GPU vs CPU: the main job (``distkeras train``) with ``--gpus-per-worker 1`` against the same
job on the CPU, in one run, on one standalone cluster started here whose worker announces this
machine's GPUs (``nvidia-smi``). Writes ``benchmarks/results/gpu.json``.

Needs a machine with an NVIDIA GPU, ``nvidia-smi``, and a Keras backend built for CUDA (e.g.
``pip install "jax[cuda12]"``); without them it stops with a message saying what is missing and
writes nothing.

    python benchmarks/gpu.py            # 2 epochs, batch 256
    python benchmarks/gpu.py --quick    # 1 epoch
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import parser, result, write_results  # noqa: E402

_BACKEND_GPU = {
    "jax": "import jax; print(jax.default_backend())",
    "tensorflow": "import tensorflow as tf; print('gpu' if tf.config.list_physical_devices('GPU') else 'cpu')",
}


def gpu_problem(backend: str) -> str | None:
    """Why this machine cannot run the benchmark (None: it can)."""
    from distkeras.spark.gpus import visible_gpus

    if not visible_gpus():
        return "no GPU is visible: nvidia-smi is missing or lists no GPU; run this benchmark on a machine with an NVIDIA GPU"
    probe = subprocess.run([sys.executable, "-c", _BACKEND_GPU[backend]], capture_output=True, text=True, timeout=300)
    seen = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else probe.stderr.strip()[-300:]
    if seen != "gpu":
        return f"nvidia-smi lists GPUs, but the {backend} backend computes on {seen!r}: install its CUDA build (e.g. pip install 'jax[cuda12]')"
    return None


def run_main_job(master: str, gpus: int, executor_gpus: int, args, out: str) -> dict:
    cmd = [
        sys.executable, "-m", "distkeras", "train", "--master", master, "--workers", str(args.workers),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--backend", args.backend,
        "--gpus-per-worker", str(gpus), "--out", out, "--json", "--quiet",
    ]  # fmt: skip
    if gpus:
        cmd += ["--conf", f"spark.executor.resource.gpu.amount={executor_gpus}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, cwd=str(ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"the main job (--gpus-per-worker {gpus}) failed with code {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--backend", choices=sorted(_BACKEND_GPU), default="jax")
    p.add_argument("--workers", type=int, default=None, help="workers (default: the GPUs, at most 2)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = 1
    problem = gpu_problem(args.backend)
    if problem:
        print(f"benchmarks/gpu.py: {problem}", file=sys.stderr)
        return 2
    from distkeras.spark.gpus import visible_gpus
    from distkeras.spark.testing import LocalStandaloneCluster

    gpus = visible_gpus()
    args.workers = args.workers or min(2, len(gpus))
    cores = max(args.workers, min(os.cpu_count() or 2, 8))
    runs = {}
    with LocalStandaloneCluster(cores=cores, memory="8g", gpus=gpus) as cluster, tempfile.TemporaryDirectory() as tmp:
        # CPU first, then GPU, then CPU again: the CPU figure is the better of the two (warm caches)
        for name, n in (("cpu", 0), ("gpu", 1), ("cpu2", 0)):
            t0 = time.perf_counter()
            runs[name] = run_main_job(cluster.master_url, n, len(gpus), args, os.path.join(tmp, name))
            runs[name]["wall_seconds"] = time.perf_counter() - t0
            print(f"{name}: {runs[name]['samples']} samples in {runs[name]['train_seconds']:.2f} s, devices {runs[name].get('devices')}", flush=True)
    rate = {k: r["samples"] / r["train_seconds"] for k, r in runs.items()}
    cpu = max(rate["cpu"], rate["cpu2"])
    rows = [
        result(
            f"main job samples/s, {args.workers} worker(s) x 1 GPU vs CPU ({args.backend})",
            "samples/s", rate["gpu"], cpu, "the same job on the CPU (--gpus-per-worker 0)", None, True,
        ),
    ]  # fmt: skip
    extra = {
        "settings": {"workers": args.workers, "epochs": args.epochs, "batch_size": args.batch_size, "backend": args.backend, "gpus": gpus},
        "runs": {k: {key: r.get(key) for key in ("samples", "train_seconds", "test_accuracy", "devices", "wall_seconds")} for k, r in runs.items()},
    }
    write_results("gpu", rows, extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
