"""`distkeras train`, the main job: end to end in subprocesses, and its bad-input errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.support import ROOT, child_env


def _env(**extra: str) -> dict[str, str]:
    env = child_env()
    env.setdefault("KERAS_BACKEND", "jax")
    env.update(extra)
    return env


def _train(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distkeras", "train", *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_train_with_defaults_writes_model_history_and_curves(tmp_path):
    out = tmp_path / "out"
    proc = _train("--out", str(out), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("strategy", "workers", "backend", "epochs", "test_accuracy", "train_seconds", "out"):
        assert key in result, key
    assert result["strategy"] == "adag"
    assert result["backend"] == "jax"
    assert result["test_accuracy"] >= 0.90, result
    assert result["commits"] > 0
    assert (out / "model.keras").stat().st_size > 0
    history = json.loads((out / "history.json").read_text())
    assert history["strategy"] == "adag" and history["epochs"]
    # the commits the result counts are the server's, and each was recorded by its worker
    assert result["commits"] == history["server"]["commits_applied"] == len(history["commits"])
    assert history["server"]["rejected_total"] == 0 and len(history["workers"]) == result["workers"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_train_on_a_parquet_file_with_feature_columns(tmp_path):
    """--data on Parquet with --feature-cols assembled by VectorAssembler and string labels
    indexed by StringIndexer: a generated, separable 3-class problem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 1200
    labels = rng.integers(0, 3, n)
    centers = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    x = centers[labels] + rng.normal(0, 0.5, (n, 3))
    names = np.array(["red", "green", "blue"])[labels]
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "colour": names}), path)
    proc = _train(
        "--data", str(path), "--feature-cols", "a,b,c", "--label-col", "colour",
        "--strategy", "downpour", "--epochs", "3", "--out", str(tmp_path / "o"), "--json", "--quiet",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["strategy"] == "downpour"
    assert result["test_accuracy"] >= 0.9, result


def test_unknown_strategy_lists_the_known_ones():
    proc = _train("--strategy", "sgdx")
    assert proc.returncode == 2
    assert "unknown strategy 'sgdx'" in proc.stderr and "adag" in proc.stderr and "diloco" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_invalid_hyperparameter_names_it():
    proc = _train("--strategy", "aeasgd", "--param", "rho=-1")
    assert proc.returncode == 2
    assert "rho" in proc.stderr and "-1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_java_says_java_17_is_needed(tmp_path):
    """A machine without Java: a clear error before Spark tries to start."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("uname", "env", "sh", "bash", "dirname", "basename", "ps", "cat", "sed", "grep", "head", "tr"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    env = _env(PATH=str(bindir))
    env.pop("JAVA_HOME", None)
    proc = _train("--epochs", "1", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Java 17" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bad_data_inputs_name_the_problem(spark, tmp_path):
    """Missing column, feature-length mismatch with --model, unreadable path: in-process, one Spark."""
    from distkeras.frontends import main_job
    from distkeras.frontends.model_io import save_model

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"f": pa.array([[0.0, 1.0]] * 40, type=pa.list_(pa.float32())), "label": [0, 1] * 20}), path)

    with pytest.raises(ValueError) as err:
        main_job.run_job(main_job.JobConfig(data=str(path), features_col="pixels", out=str(tmp_path / "o1"), progress=False))
    assert "features column 'pixels' not found; the data has columns ['f', 'label']" in str(err.value)

    with pytest.raises(ValueError) as err:
        main_job.run_job(main_job.JobConfig(data=str(tmp_path / "nowhere.parquet"), out=str(tmp_path / "o2"), progress=False))
    assert "nowhere.parquet" in str(err.value)

    model = main_job.default_model(5, 2)
    model_path = tmp_path / "m.keras"
    save_model(model, str(model_path))
    with pytest.raises(ValueError) as err:
        main_job.run_job(
            main_job.JobConfig(data=str(path), features_col="f", model=str(model_path), out=str(tmp_path / "o3"), progress=False)
        )
    assert f"the model {str(model_path)!r} expects 5 input values per row (input shape (5,)), but column 'f' has 2" in str(err.value)


@pytest.mark.slow
def test_train_with_early_stopping_stops_and_keeps_the_best_epoch(tmp_path):
    """`distkeras train --early-stopping 1` with a learning rate too high to keep improving:
    it stops before the 200 epochs asked (workers commit every batch of 4, so the stop reaches
    them long before the end) and reports the best epoch's metrics."""
    out = tmp_path / "out"
    proc = _train(
        "--epochs", "200", "--batch-size", "4", "--window", "1", "--early-stopping", "1", "--lr", "0.5",
        "--out", str(out), "--json", "--quiet",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 200 and result["epochs_trained"] < 200, result
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == result["epochs_trained"]
    best = min(history["epochs"], key=lambda e: e["loss"])
    assert result["best_epoch"] == best["epoch"] and result["test_loss"] == best["loss"]
    assert result["samples"] < 1437 // 2 // 4 * 4 * 2 * 200
