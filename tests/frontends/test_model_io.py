from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from distkeras.frontends.model_io import ModelIOError, UnsafeModelError, load_model, normalize_url, save_model

from .conftest import predict_np


def test_normalize_url(tmp_path):
    assert normalize_url("s3a://b/k.keras") == "s3://b/k.keras"
    assert normalize_url("s3n://b/k.keras") == "s3://b/k.keras"
    assert normalize_url("file:/tmp/m.keras") == "/tmp/m.keras"
    assert normalize_url("file:///tmp/m.keras") == "/tmp/m.keras"
    assert normalize_url("file://localhost/tmp/m.keras") == "/tmp/m.keras"
    assert normalize_url("memory://x/m.keras") == "memory://x/m.keras"
    assert normalize_url("rel/m.keras") == os.path.abspath("rel/m.keras")
    with pytest.raises(ModelIOError, match="not local"):
        normalize_url("file://otherhost/tmp/m.keras")


@pytest.mark.parametrize("where", ["local", "file_url", "memory"])
def test_round_trip(where, tmp_path, digits_model, digits_arrays):
    url = {
        "local": str(tmp_path / "new" / "dir" / "digits.keras"),
        "file_url": "file://" + str(tmp_path / "digits.keras"),
        "memory": f"memory://distkeras-tests/{tmp_path.name}/digits.keras",
    }[where]
    written = save_model(digits_model, url)
    loaded = load_model(url)
    x = digits_arrays[2][:50] / 16.0
    np.testing.assert_array_equal(predict_np(loaded, x), predict_np(digits_model, x))
    assert loaded.compiled and loaded.loss == "sparse_categorical_crossentropy"
    if where != "memory":
        # Written atomically: no temporary file left beside the model.
        folder = os.path.dirname(written)
        assert os.listdir(folder) == ["digits.keras"]
    save_model(digits_model, url)  # overwrite by default
    with pytest.raises(ModelIOError, match="exists"):
        save_model(digits_model, url, overwrite=False)


def test_lambda_model_refused(tmp_path, keras):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(2)])
    path = str(tmp_path / "lambda.keras")
    model.save(path)  # saved normally, with Keras
    with pytest.raises(UnsafeModelError, match=r"refusing to load .*lambda\.keras.*Lambda") as info:
        load_model(path)
    assert "safe mode" in str(info.value)
    # Through fsspec too.
    url = f"memory://distkeras-tests/{tmp_path.name}/lambda.keras"
    import fsspec

    with open(path, "rb") as src, fsspec.open(url, "wb") as dst:
        dst.write(src.read())
    with pytest.raises(UnsafeModelError):
        load_model(url)


def test_unreadable_and_bad_paths(tmp_path, digits_model):
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(ModelIOError, match=r"cannot read model from '.*missing\.keras': no such file"):
        load_model(missing)
    with pytest.raises(ModelIOError, match=r"'memory://nowhere/x\.keras': no such file"):
        load_model("memory://nowhere/x.keras")
    with pytest.raises(ModelIOError, match="is a directory"):
        load_model(str(tmp_path))
    with pytest.raises(ModelIOError, match=r"'nosuchproto://x\.keras'.*Protocol not known"):
        load_model("nosuchproto://x.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ModelIOError, match="not a Keras .keras file"):
        load_model(str(junk))
    empty_zip = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    with pytest.raises(ModelIOError, match=r"cannot load the Keras model in '.*empty\.keras'"):
        load_model(str(empty_zip))
    with pytest.raises(ValueError, match="must end with '.keras'"):
        save_model(digits_model, str(tmp_path / "model.h5"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ModelIOError, match="cannot write model to"):
        save_model(digits_model, str(blocker / "sub" / "m.keras"))
