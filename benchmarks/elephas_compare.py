"""distkeras side by side with elephas (the maintained peer) on the same task, one fresh process each.

The task (the one of issue 15): the bundled UCI digits (1,437 train / 360 test rows), an MLP
64 -> 64 relu -> 10 softmax, Adam (lr 0.001), batch 32, 10 epochs, 2 workers on ``local[2]``.
distkeras runs DOWNPOUR (asynchronous, like elephas's ``mode="asynchronous"``) on the JAX and the
TensorFlow backends; elephas 7.3 runs ``SparkModel(mode="asynchronous", frequency="epoch")`` with
TensorFlow (the only backend it supports).

Each run is one new Python process from start to trained, scored model, and it reports:
``process_s`` (the whole process, measured by this script around the subprocess),
``train_s`` (the training call alone: ``trainer.train(df)`` / ``spark_model.fit(rdd)``) and the test
accuracy. elephas pins ``tensorflow<2.20``, ``numpy<2`` and ``pyspark<=4.0``, so it cannot share
distkeras' environment: it runs in its own virtual environment, given with ``--elephas-python``::

    python3.11 -m venv /work/elephas-venv
    /work/elephas-venv/bin/pip install elephas==7.3.0
    python benchmarks/elephas_compare.py --elephas-python /work/elephas-venv/bin/python --rounds 3

The sides run alternately ``--rounds`` times (the machine may be shared: medians, and the load
average at the start and end, are reported). Ratio = elephas's time / distkeras's (above 1:
distkeras is faster); target 1/0.7 (distkeras at most 0.7x elephas's time). Results go to
``benchmarks/results/elephas_compare.json`` in the shape of every benchmark here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# the distkeras checkout to measure: this one, or another (--before, e.g. main before a change)
ROOT = Path(os.environ.get("DISTKERAS_BENCH_ROOT") or HERE.parent)
sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(1, str(ROOT))

from _common import parser, result, write_results  # noqa: E402

from _digits_task import BATCH, EPOCHS, HIDDEN, LEARNING_RATE, WORKERS  # noqa: E402

TARGET = 1 / 0.7  # distkeras takes at most 0.7x elephas's time

VENV_HINT = (
    "elephas needs its own virtual environment (it pins tensorflow<2.20, numpy<2, pyspark<=4.0):\n"
    "    python3.11 -m venv /work/elephas-venv\n"
    "    /work/elephas-venv/bin/pip install elephas==7.3.0\n"
    "then run again with --elephas-python /work/elephas-venv/bin/python"
)


def _distkeras_child(backend: str) -> dict[str, Any]:
    """One distkeras run in this (fresh) process (see benchmarks/_digits_task.py)."""
    from _digits_task import run_digits

    return run_digits(backend, calls=1)


# Runs under elephas's own interpreter (its venv): plain text, no import of this repository.
ELEPHAS_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
from pyspark import SparkConf, SparkContext
conf = (SparkConf().setMaster("local[2]").setAppName("elephas-compare")
        .set("spark.ui.enabled", "false").set("spark.ui.showConsoleProgress", "false")
        .set("spark.driver.host", "127.0.0.1").set("spark.driver.bindAddress", "127.0.0.1"))
sc = SparkContext(conf=conf)
sc.setLogLevel("ERROR")
from tensorflow import keras
from elephas.spark_model import SparkModel
from elephas.utils.rdd_utils import to_simple_rdd
d = np.load(sys.argv[1])
x, y, xt, yt = d["x"], d["y"], d["x_test"], d["y_test"]
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(HIDDEN, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="categorical_crossentropy", metrics=["accuracy"])
rdd = to_simple_rdd(sc, x, keras.utils.to_categorical(y, 10))
spark_model = SparkModel(model, frequency="epoch", mode="asynchronous", num_workers=WORKERS)
t0 = time.perf_counter()
spark_model.fit(rdd, epochs=EPOCHS, batch_size=BATCH, verbose=0, validation_split=0.0)
train_s = time.perf_counter() - t0
acc = float((np.asarray(spark_model.master_network.predict(xt, verbose=0)).argmax(axis=1) == yt).mean())
sc.stop()
print(json.dumps({"train_s": train_s, "accuracy": acc}))
"""


def _elephas_script() -> str:
    consts = f"HIDDEN={HIDDEN}\nLEARNING_RATE={LEARNING_RATE}\nWORKERS={WORKERS}\nEPOCHS={EPOCHS}\nBATCH={BATCH}\n"
    return consts + ELEPHAS_CHILD


def _run(cmd: list[str], env: dict[str, str], timeout: float, cwd: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    process_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = process_s
    return out


def _digits_file(folder: Path) -> Path:
    import numpy as np

    from distkeras.data import load_digits

    d = load_digits("both")
    path = folder / "digits.npz"
    np.savez(path, x=d.x_train, y=d.y_train, x_test=d.x_test, y_test=d.y_test)
    return path


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--elephas-python", default=None, help="the python of a virtual environment with elephas 7.3 installed")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of every side (medians are reported)")
    p.add_argument("--backends", default="jax,tensorflow", help="distkeras backends to run")
    p.add_argument("--before", default=None, metavar="CHECKOUT", help="also run the distkeras side from this checkout (e.g. main before a change)")
    p.add_argument(
        "--fresh-cache",
        action="store_true",
        help="give every distkeras run new, empty caches (JAX compilation cache, driver JVM archive): a first-ever "
        "run; default: the user's caches, as a second run on a machine finds them",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_distkeras_child(args.child)))
        return 0
    if args.quick:
        args.rounds = 1
    sides = [f"distkeras-{b}" for b in args.backends.split(",") if b]
    if args.before:
        sides += [f"before-{b}" for b in args.backends.split(",") if b]
    if args.elephas_python:
        if not Path(args.elephas_python).exists():
            p.error(f"--elephas-python {args.elephas_python!r} does not exist\n{VENV_HINT}")
        sides.insert(0, "elephas")  # first: a broken elephas environment shows at once
    else:
        print(VENV_HINT, file=sys.stderr)
        print("(running the distkeras side only)", file=sys.stderr)

    import tempfile

    base_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", SPARK_LOCAL_IP="127.0.0.1")
    base_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    load_start = _loadavg()
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="elephas-compare-") as tmp:
        data = _digits_file(Path(tmp))
        script = Path(tmp) / "elephas_child.py"
        script.write_text(_elephas_script())
        for i in range(args.rounds):
            order = sides if i % 2 == 0 else sides[::-1]
            for side in order:
                if side == "elephas":
                    env = {k: v for k, v in base_env.items() if k not in ("PYTHONPATH", "KERAS_BACKEND", "PYSPARK_PYTHON")}
                    env["PYSPARK_PYTHON"] = args.elephas_python
                    run = _run([args.elephas_python, str(script), str(data)], env, 900)
                else:
                    who, backend = side.split("-", 1)
                    env = {k: v for k, v in base_env.items() if k != "PYSPARK_PYTHON"}
                    env["KERAS_BACKEND"] = backend
                    root = str(Path(args.before).resolve()) if who == "before" else str(ROOT)
                    env["DISTKERAS_BENCH_ROOT"] = root
                    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
                    if args.fresh_cache:  # nothing reused from earlier processes: JAX programs, the JVM archive
                        env["DISTKERAS_JAX_CACHE"] = tempfile.mkdtemp(prefix="jax-cache-", dir=tmp)
                        env["DISTKERAS_SPARK_CDS"] = tempfile.mkdtemp(prefix="spark-cds-", dir=tmp)
                    # cwd = the checkout: local Python workers put their working folder first on
                    # sys.path, ahead of PYTHONPATH, so they would import the other checkout
                    run = _run([sys.executable, str(Path(__file__).resolve()), "--child", backend], env, 1800, cwd=root)
                run["load_1m"] = _loadavg()[0] if _loadavg() else None
                runs[side].append(run)
                print(f"{side:<22} process {run['process_s']:6.1f} s  train {run['train_s']:6.1f} s  accuracy {run['accuracy']:.3f}", file=sys.stderr)

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    results = []
    summary = {
        side: {
            "process_s_median": med(side, "process_s"),
            "train_s_median": med(side, "train_s"),
            "accuracy_median": med(side, "accuracy"),
        }
        for side in sides
    }
    if "elephas" in sides:
        for side in sides:
            if side == "elephas":
                continue
            if side.startswith("before-"):
                continue
            for key, what in (("process_s", "whole process"), ("train_s", "training call")):
                results.append(
                    result(
                        f"{side} vs elephas: {what}",
                        "s",
                        med(side, key),
                        med("elephas", key),
                        "elephas 7.3 asynchronous (TensorFlow)",
                        target=TARGET,
                        higher_is_better=False,
                    )
                )
    if args.before:
        for backend in [b for b in args.backends.split(",") if b]:
            for key, what in (("process_s", "whole process"), ("train_s", "training call")):
                results.append(
                    result(
                        f"distkeras-{backend} vs before: {what}",
                        "s",
                        med(f"distkeras-{backend}", key),
                        med(f"before-{backend}", key),
                        f"distkeras at {args.before}",
                        target=None,
                        higher_is_better=False,
                    )
                )
    extra = {
        "fresh_jax_cache": bool(args.fresh_cache),
        "before": args.before,
        "task": f"digits 1437/360, MLP {HIDDEN}, Adam {LEARNING_RATE}, batch {BATCH}, {EPOCHS} epochs, {WORKERS} workers, local[2]; "
        "distkeras DOWNPOUR, elephas asynchronous/epoch",
        "rounds": args.rounds,
        "load_average_start": load_start,
        "load_average_end": _loadavg(),
        "summary": summary,
        "runs": runs,
        "note": "process_s: one fresh Python process from start to trained and scored model; train_s: the training "
        "call alone; ratio = elephas / distkeras (above 1: distkeras faster), target 1/0.7; medians over alternating rounds",
    }
    if results:
        write_results("elephas_compare", results, extra)
    else:
        print(json.dumps(extra["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
