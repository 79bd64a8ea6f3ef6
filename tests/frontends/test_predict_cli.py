"""``distkeras predict``: end to end in a subprocess (its own Spark), bad input in process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distkeras.frontends.cli import main
from distkeras.frontends.model_io import save_model

from tests.support import child_env

from .conftest import predict_np

pytestmark = pytest.mark.slow


def _env(**extra):
    return child_env(**{"KERAS_BACKEND": "jax", **extra})


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, digits_model):
    path = str(tmp_path_factory.mktemp("model") / "digits.keras")
    save_model(digits_model, path)
    return path


def _write_parquet(path, x, with_columns=False):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"id": pa.array(np.arange(len(x)), pa.int64()), "pixels": pa.array(list(x.astype(np.float32)), pa.list_(pa.float32()))}
    if with_columns:
        cols.update({f"p{i}": pa.array(x[:, i].astype(np.float64)) for i in range(x.shape[1])})
    pq.write_table(pa.table(cols), path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_predict_end_to_end_subprocess(tmp_path, model_file, digits_model, digits_arrays):
    pytest.importorskip("pyspark")
    from distkeras.spark.session import check_java

    try:
        check_java()
    except Exception as exc:  # no Java here: nothing to run end to end
        pytest.skip(str(exc).splitlines()[0])
    x = digits_arrays[2][:200] / 16.0
    data = str(tmp_path / "test.parquet")
    _write_parquet(data, x)
    out = str(tmp_path / "pred.parquet")
    proc = subprocess.run(
        [sys.executable, "-m", "distkeras", "predict", "--model", model_file, "--data", data,
         "--features-col", "pixels", "--out", out, "--master", "local[2]"],
        env=_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "wrote predictions to" in proc.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pydict()
    assert set(table) == {"id", "pixels", "prediction", "predicted_label"}
    order = np.argsort(table["id"])
    got = np.array(table["prediction"], np.float32)[order]
    np.testing.assert_allclose(got, predict_np(digits_model, x), rtol=1e-5, atol=1e-6)
    assert np.array(table["predicted_label"])[order].tolist() == got.argmax(axis=1).tolist()


def test_no_java_is_one_clear_message(tmp_path, model_file):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "distkeras", "predict", "--model", model_file, "--data", str(data)],
        env=_env(PATH=str(empty_bin), JAVA_HOME=str(empty_bin)), cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Spark needs Java 17+" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("distkeras predict: error:")


def test_feature_cols_to_csv_in_process(spark, tmp_path, model_file, digits_model, digits_arrays, capsys):
    """--feature-cols assembles numeric columns (VectorAssembler); CSV gets one column per output."""
    x = digits_arrays[2][:40] / 16.0
    data = str(tmp_path / "cols.parquet")
    _write_parquet(data, x, with_columns=True)
    out = str(tmp_path / "pred.csv")
    cols = ",".join(f"p{i}" for i in range(64))
    assert main(["predict", "--model", model_file, "--data", data, "--feature-cols", cols, "--out", out]) == 0
    assert not spark.sparkContext._jsc.sc().isStopped()  # the running session is not ours to stop
    import pandas as pd

    frame = pd.concat(pd.read_csv(p) for p in sorted(Path(out).glob("part-*.csv"))).sort_values("id")
    assert "__distkeras_features" not in frame.columns
    got = frame[[f"prediction_{i}" for i in range(10)]].to_numpy(np.float32)
    np.testing.assert_allclose(got, predict_np(digits_model, x), rtol=1e-4, atol=1e-5)
    # Without --out: the first rows as JSON lines on stdout.
    capsys.readouterr()
    assert main(["predict", "--model", model_file, "--data", data, "--feature-cols", cols, "--show", "3"]) == 0
    import json

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and len(lines[0]["prediction"]) == 10 and "predicted_label" in lines[0]
    # An existing output is not replaced without --overwrite.
    assert main(["predict", "--model", model_file, "--data", data, "--feature-cols", cols, "--out", out]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_bad_input_errors(spark, tmp_path, model_file, keras, capsys):
    x = np.zeros((3, 64), np.float32)
    data = str(tmp_path / "d.parquet")
    _write_parquet(data, x, with_columns=True)

    def run(*argv):
        code = main(["predict", *argv])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("distkeras predict: error:") and "Traceback" not in err
        return err

    err = run("--model", model_file, "--data", data, "--features-col", "nope")
    assert "features column 'nope' not found" in err and "['id', 'pixels', 'p0'," in err
    err = run("--model", model_file, "--data", data, "--feature-cols", "p0,zz,p1")
    assert "feature column(s) ['zz'] not found" in err and "'p63'" in err
    err = run("--model", model_file, "--data", data, "--feature-cols", "p0,pixels")
    assert "feature column(s) 'pixels' (array<float>) not numeric" in err
    err = run("--model", model_file, "--data", data, "--features-col", "id")
    assert "features column 'id' has type bigint" in err
    err = run("--model", model_file, "--data", data, "--features-col", "pixels", "--predicted-label-col", "id")
    assert "already has a column 'id'" in err
    err = run("--model", model_file, "--data", data, "--feature-cols", "p0,p1")
    assert "gives 2 columns but the model takes 64 features" in err
    err = run("--model", model_file, "--data", data)  # default column 'features' is not there
    assert "features column 'features' not found" in err
    err = run("--model", model_file, "--data", str(tmp_path / "missing.parquet"))
    assert f"cannot read data from '{tmp_path / 'missing.parquet'}': no such file" in err
    err = run("--model", str(tmp_path / "missing.keras"), "--data", data)
    assert f"cannot read model from '{tmp_path / 'missing.keras'}': no such file" in err
    lam = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda t: t + 1.0), keras.layers.Dense(2)])
    lam.save(str(tmp_path / "lambda.keras"))
    err = run("--model", str(tmp_path / "lambda.keras"), "--data", data, "--features-col", "pixels")
    assert "refusing to load" in err and "Lambda" in err
    err = run("--model", model_file, "--data", str(tmp_path / "data.txt"))
    assert "cannot tell the format" in err
