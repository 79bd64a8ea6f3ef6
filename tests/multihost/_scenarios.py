"""The driver of tests/multihost: run by ``NamespaceCluster.run_driver`` inside the driver host's
network namespace (one SparkSession, one driver process for every scenario, since each costs
~15 s of Spark start and ~10 s of Keras import in fresh executors).

    python _scenarios.py MASTER_URL OUT_DIR smoke,adag,localsgd,...

Prints one JSON object (the last stdout line): ``driver`` (its address, network namespace,
the executors) and ``scenarios``: for each name ``{"ok": true, "seconds": s, ...result}`` or
``{"ok": false, "error": "Type: message", "traceback": ...}``. A failing scenario does not stop
the others.

Where tasks ran is read from the processes themselves: ``/proc/PID/ns/net`` of each worker's
Python process names its network namespace (``net:[INODE]``), which the test compares with the
cluster's namespaces.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

WORKERS = 2
EPOCHS = 10
MIN_ACCURACY = 0.85


def netns_of(pid: int) -> str | None:
    """``net:[INODE]`` of a process of this machine (the PID namespace is shared), or None."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class Context:
    def __init__(self, spark, out_dir: str):
        from tests.training import digits_frames

        self.spark = spark
        self.out_dir = out_dir
        self.train_df, self.test_df, self.data = digits_frames(spark)
        self.driver_address = spark.sparkContext.getConf().get("spark.driver.host")

    def accuracy(self, model) -> float:
        from tests.training import accuracy, mlp_probs

        return accuracy(mlp_probs(model.get_weights(), self.data.x_test), self.data.y_test)

    def trainer(self, cls, **overrides):
        from tests.training import make_mlp, trainer_kwargs

        kwargs = trainer_kwargs(num_workers=WORKERS, num_epoch=EPOCHS, spark=self.spark)
        kwargs.update(overrides)
        return cls(make_mlp(), **kwargs)

    def train(self, trainer) -> dict:
        """Train on the digits; the test accuracy, the server's counts and where each worker ran."""
        model = trainer.train(self.train_df)
        h = trainer.history
        services = [shard.get("service", {}) for shard in h.server.get("shards", [h.server])] if h.server else []
        return {
            "ps_advertised": [s.get("address") for s in services],
            "ps_bound": [s.get("bound") for s in services],
            "ps_tls": [s.get("tls") for s in services],
            "model": model,
            "accuracy": self.accuracy(model),
            "workers": [{"worker": w["worker"], "pid": w["pid"], "netns": netns_of(w["pid"]), "rows": w["rows"]} for w in h.workers],
            "commits_applied": h.server.get("commits_applied") if h.server else None,
            "shards": len(h.server.get("shards", [])) if h.server else None,
            "history": h,
        }


def wait_for_executors(spark, n: int, timeout: float = 120.0) -> list[str]:
    """Wait until ``n`` executors (besides the driver) are registered; their host:port."""
    tracker = spark.sparkContext._jsc.sc().statusTracker()
    driver = spark.sparkContext.getConf().get("spark.driver.host")
    deadline = time.monotonic() + timeout
    while True:
        infos = [f"{e.host()}:{e.port()}" for e in tracker.getExecutorInfos()]
        executors = [i for i in infos if not i.startswith(f"{driver}:")]
        if len(executors) >= n or time.monotonic() >= deadline:
            return sorted(executors)
        time.sleep(0.25)


# --- scenarios ----------------------------------------------------------------------------------


def scenario_smoke(ctx: Context) -> dict:
    """A plain Spark job: each task reports the address it reaches the driver from, its network
    namespace, its SPARK_LOCAL_IP and pid."""
    driver = ctx.driver_address

    def probe(it):
        import os
        import socket

        from pyspark import TaskContext

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect((driver, 9))  # UDP: picks the route and local address, sends nothing
            address = s.getsockname()[0]
        finally:
            s.close()
        yield {
            "partition": TaskContext.get().partitionId(),
            "address": address,
            "netns": os.readlink("/proc/self/ns/net"),
            "spark_local_ip": os.environ.get("SPARK_LOCAL_IP"),
            "pid": os.getpid(),
            "rows": sum(1 for _ in it),
        }

    n = 4 * WORKERS
    tasks = ctx.spark.sparkContext.parallelize(range(100), n).mapPartitions(probe).collect()
    return {"tasks": tasks}


def scenario_adag(ctx: Context) -> dict:
    from distkeras.frontends.trainers import ADAG

    out = ctx.train(ctx.trainer(ADAG))
    out.pop("model"), out.pop("history")
    return out


def scenario_localsgd(ctx: Context) -> dict:
    from distkeras.frontends.trainers import LocalSGD

    out = ctx.train(ctx.trainer(LocalSGD))
    out.pop("model"), out.pop("history")
    return out


def scenario_adag_shards(ctx: Context) -> dict:
    from distkeras.frontends.trainers import ADAG

    out = ctx.train(ctx.trainer(ADAG, shards=2))
    out.pop("model"), out.pop("history")
    return out


def scenario_checkpoint_resume(ctx: Context) -> dict:
    """ADAG writes checkpoints (the parameter server runs on the driver host and writes to a
    path of the driver's); a second run resumes from the checkpoint (``resume=``): its server
    starts from the checkpointed center, clock and strategy state, whatever the model's weights."""
    import numpy as np

    from distkeras.frontends.trainers import ADAG
    from distkeras.ps import load_checkpoint

    url = "file://" + os.path.join(ctx.out_dir, "checkpoint")
    first = ctx.train(ctx.trainer(ADAG, num_epoch=3, checkpoint=url, checkpoint_every=5))
    snap, meta = load_checkpoint(url, 0)
    center = np.asarray(snap["state"]["center"], np.float32)
    final = np.concatenate([np.ravel(w) for w in first["model"].get_weights()]).astype(np.float32)
    second = ctx.train(ctx.trainer(ADAG, num_epoch=EPOCHS - 3, resume=url))  # a fresh random model
    h = second.pop("history")
    return {
        "checkpoint_files": sorted(os.listdir(os.path.join(ctx.out_dir, "checkpoint"))),
        "checkpoint_clock": int(snap["clock"]),
        "checkpoint_strategy": meta.get("strategy"),
        "checkpoint_equals_final_center": bool(np.array_equal(center, final)),
        "first_accuracy": first["accuracy"],
        "first_commits_applied": first["commits_applied"],
        "second_clock": h.server["clock"],
        "second_commits_applied": h.server["commits_applied"],
        "accuracy": second["accuracy"],
        "workers": second["workers"],
    }


def scenario_estimator(ctx: Context) -> dict:
    import numpy as np

    from distkeras.frontends.estimator import KerasEstimator, KerasModel
    from tests.training import make_mlp, optimizer

    est = KerasEstimator(
        model=make_mlp(),
        featuresCol="features",
        labelCol="label",
        strategy="adag",
        numWorkers=WORKERS,
        batchSize=16,
        numEpochs=EPOCHS,
        optimizer=optimizer(),
        metrics=["accuracy"],
        progress=False,
    )
    fitted = est.fit(ctx.train_df)
    assert isinstance(fitted, KerasModel), type(fitted)
    out = fitted.transform(ctx.test_df)
    rows = out.select("label", "prediction", "predicted_label").collect()
    probs = np.array([r["prediction"] for r in rows], np.float32)
    return {
        "columns": out.columns,
        "rows": len(rows),
        "probs_shape": list(probs.shape),
        "accuracy": float(np.mean([int(r["predicted_label"]) == int(r["label"]) for r in rows])),
        "fit_accuracy": ctx.accuracy(fitted.getModel()),
    }


def scenario_inference(ctx: Context) -> dict:
    """predict / evaluate on the executors of a model trained on the driver (plain Keras fit),
    compared with a NumPy forward pass of the same weights."""
    import keras
    import numpy as np

    from distkeras.spark.inference import evaluate, predict
    from tests.training import accuracy, make_mlp, mlp_probs

    model = make_mlp()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ctx.data.x_train, ctx.data.y_train, batch_size=32, epochs=5, verbose=0)
    expected = mlp_probs(model.get_weights(), ctx.data.x_test)
    out = predict(model, ctx.test_df).select("label", "prediction", "predicted_label").collect()
    probs = np.array([r["prediction"] for r in out], np.float64)
    labels = np.array([r["label"] for r in out])
    # the rows come back in the DataFrame's order, which is the test split's order
    metrics = evaluate(model, ctx.test_df)
    return {
        "rows": len(out),
        "labels_in_order": bool(np.array_equal(labels, ctx.data.y_test)),
        "max_abs_diff": float(np.max(np.abs(probs - expected))) if probs.shape == expected.shape else None,
        "predicted_label_is_argmax": bool(all(int(r["predicted_label"]) == int(np.argmax(r["prediction"])) for r in out)),
        "accuracy": accuracy(probs, labels),
        "expected_accuracy": accuracy(expected, ctx.data.y_test),
        "evaluate": metrics,
        "partitions": ctx.test_df.rdd.getNumPartitions(),
    }


def _worker_host_processes(marker: str) -> list[int]:
    """Pids of this machine's processes on one of the cluster's worker hosts (the network
    namespaces the test passes in DISTKERAS_TEST_WORKER_NETNS) whose command line contains
    ``marker``."""
    hosts = set(os.environ["DISTKERAS_TEST_WORKER_NETNS"].split(","))
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and netns_of(int(name)) in hosts:
            found.append(int(name))
    return found


def _when_checkpointed(url_path: str, action, timeout: float = 300.0, all_registered: bool = False) -> threading.Thread:
    """Run ``action()`` in a thread once the parameter server has written a checkpoint (commits
    have been applied: the run is under way); with ``all_registered``, one that shows every
    worker registered (a task attempt id above 0: earlier scenarios used the first ones)."""
    def ready() -> bool:
        if not os.path.exists(os.path.join(url_path, "shard-00.npz")):
            return False
        if not all_registered:
            return True
        from distkeras.ps import load_checkpoint

        try:
            attempts = load_checkpoint("file://" + url_path, 0)[1]["attempts"]
        except Exception:  # being replaced right now: look again
            return False
        return len(attempts) == WORKERS and all(int(a) > 0 for a in attempts.values())

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                action()
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def scenario_executor_killed(ctx: Context) -> dict:
    """An executor JVM on one worker host is SIGKILLed while ADAG trains. Spark launches a new
    executor and retries the lost task (attempt 1), which fences off the dead attempt: the run
    finishes, no commit is applied twice, and the zombie Python worker (its JVM gone, still
    training) is refused as soon as it commits again."""
    import signal

    from distkeras.frontends.trainers import ADAG

    folder = os.path.join(ctx.out_dir, "killed-checkpoint")
    killed: list[int] = []

    t0 = time.monotonic()
    seen: dict = {}

    def kill_one_executor():
        pids = _worker_host_processes("CoarseGrainedExecutorBackend")
        seen["executors"] = {p: netns_of(p) for p in pids}
        seen["pyspark"] = {p: netns_of(p) for p in _worker_host_processes("pyspark")}
        seen["at"] = time.monotonic() - t0
        if pids:
            from distkeras.ps import load_checkpoint

            seen["attempts_before"] = load_checkpoint("file://" + folder, 0)[1]["attempts"]  # the attempts registered now
            victim = max(pids)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    watcher = _when_checkpointed(folder, kill_one_executor, all_registered=True)
    r = ctx.train(ctx.trainer(ADAG, num_epoch=30, checkpoint="file://" + folder, checkpoint_every=2))
    watcher.join(5)
    h = r.pop("history")
    return {
        **{k: v for k, v in r.items() if k != "model"},
        "killed": killed,
        "seen": seen,
        "summaries": [{k: w.get(k) for k in ("worker", "attempt", "pid", "seconds", "started_at")} for w in h.workers],
        "attempts": {str(w["worker"]): w["attempt"] for w in h.workers},
        "fencing_attempts": {str(w["worker"]): w["fencing_attempt"] for w in h.workers},
        "server_workers": {k: {"attempt": v["attempt"], "commits": v["commits"]} for k, v in h.server["workers"].items()},
        "recorded_commits": {str(w): len([c for c in h.commits if c["worker"] == w]) for w in range(WORKERS)},
        "duplicates": h.server["duplicates"],
        "fenced": h.server.get("fenced", {}),
        "rejected": h.server["rejected"],
    }


def scenario_hung_sync_worker(ctx: Context) -> dict:
    """One worker host's Python processes are stopped (SIGSTOP) in the middle of a LocalSGD run:
    the other worker's round cannot close, and after ``round_timeout`` the run fails with an
    error that names the worker it waited for, instead of waiting forever."""
    import signal

    from distkeras.frontends.trainers import LocalSGD

    folder = os.path.join(ctx.out_dir, "hung-checkpoint")
    stopped: list[int] = []

    def stop_one_host():
        pids = _worker_host_processes("pyspark")
        ns = {netns_of(p) for p in pids}
        if ns:
            victim_ns = sorted(x for x in ns if x)[0]
            for p in pids:
                if netns_of(p) == victim_ns:
                    try:
                        os.kill(p, signal.SIGSTOP)
                        stopped.append(p)
                    except ProcessLookupError:
                        pass

    watcher = _when_checkpointed(folder, stop_one_host)
    t0 = time.monotonic()
    error = None
    try:
        ctx.trainer(LocalSGD, num_epoch=30, checkpoint="file://" + folder, checkpoint_every=2, round_timeout=10).train(ctx.train_df)
    except Exception as exc:
        error = {"type": type(exc).__name__, "message": str(exc)[:3000], "worker_id": getattr(exc, "worker_id", None)}
    finally:
        watcher.join(5)
        for p in stopped:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
    return {"stopped": stopped, "error": error, "seconds_to_fail": time.monotonic() - t0}


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items() if name.startswith("scenario_")}


def main() -> None:
    master, out_dir, names = sys.argv[1], sys.argv[2], [n for n in sys.argv[3].split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; known: {sorted(SCENARIOS)}")
    from distkeras.spark.session import get_or_create_session

    t0 = time.perf_counter()
    spark = get_or_create_session(
        master,
        app_name="distkeras-multihost",
        conf={
            "spark.executor.memory": "512m",
            # a failing scenario fails after one retry (not 4 attempts); the retry is what the
            # killed-executor scenario needs
            "spark.task.maxFailures": "2",
            "spark.locality.wait": "0",  # a free slot on the other host takes the task now
            "spark.default.parallelism": str(WORKERS),
        },
    )
    report: dict = {"scenarios": {}}
    try:
        executors = wait_for_executors(spark, WORKERS)
        ctx = Context(spark, out_dir)
        report["driver"] = {
            "address": ctx.driver_address,
            "netns": netns_of(os.getpid()),
            "hostname": socket.gethostname(),
            "executors": executors,
            "session_seconds": time.perf_counter() - t0,
        }
        for name in names:
            t = time.perf_counter()
            try:
                result = {"ok": True, **SCENARIOS[name](ctx)}
            except Exception as exc:
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:4000], "traceback": traceback.format_exc()[-6000:]}
            result["seconds"] = round(time.perf_counter() - t, 2)
            report["scenarios"][name] = result
            print(f"[multihost] {name}: {'ok' if result['ok'] else result['error'][:300]} ({result['seconds']} s)", file=sys.stderr, flush=True)
    finally:
        spark.stop()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
