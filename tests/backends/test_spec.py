"""ModelSpec as plain data: JSON and .npy I/O, optimizer edits, validation (no Keras needed)."""

import ast
import json
import os
import pathlib

import numpy as np
import pytest

from distkeras.backends import LayoutError, ModelSpec, SpecError, sgd_nesterov
from distkeras.core.flat import Layout

MODEL = {"module": "keras", "class_name": "Sequential", "config": {"name": "m", "layers": []}, "registered_name": None}
LAYOUT = Layout.from_shapes([(2, 3), (3,)], ["dense/kernel", "dense/bias"])


def spec(**kw):
    base = dict(model=MODEL, optimizer="adam", loss="mse", metrics=["mae"], layout=LAYOUT.to_dict())
    base.update(kw)
    return ModelSpec(**base)


def test_json_round_trip_is_plain_data():
    s = spec(compile_kwargs={"loss_weights": [1.0]}, modules=("my.layers",))
    text = s.to_json()
    data = json.loads(text)
    assert data["format"] == "distkeras.ModelSpec/1" and data["modules"] == ["my.layers"]
    again = ModelSpec.from_json(text)
    assert again == s and again.weights is None


def test_save_and_load_with_weights_as_npy(tmp_path):
    weights = np.arange(LAYOUT.size, dtype=np.float32)
    s = spec(weights=weights)
    path = tmp_path / "spec.json"
    s.save(path)
    assert sorted(os.listdir(tmp_path)) == ["spec.json", "spec.npy"]
    loaded = ModelSpec.load(path)
    assert loaded == s and np.array_equal(loaded.weights, weights) and loaded.weights.dtype == np.float32
    # Saving a spec without weights removes a stale .npy.
    spec().save(path)
    assert sorted(os.listdir(tmp_path)) == ["spec.json"]
    assert ModelSpec.load(path).weights is None


def test_weights_must_match_the_layout():
    with pytest.raises(LayoutError, match="length 9"):
        spec(weights=np.zeros(4, np.float32))
    with pytest.raises(LayoutError, match="float32"):
        spec(weights=np.zeros(9, np.float64))
    s = spec()
    assert np.array_equal(s.with_weights(np.ones(9, np.float32)).weights, np.ones(9))
    w = np.ones(9, np.float32)
    s2 = s.with_weights(w)
    w[:] = 5
    assert s2.weights[0] == 1  # copied


def test_with_optimizer_by_name_and_config():
    s = spec().with_optimizer("sgd", learning_rate=0.01, momentum=0.9, nesterov=True)
    assert s.optimizer == {"class_name": "sgd", "config": {"learning_rate": 0.01, "momentum": 0.9, "nesterov": True}}
    assert spec().with_optimizer("rmsprop").optimizer == "rmsprop"
    nest = spec().with_optimizer(sgd_nesterov(0.05, 0.8))
    assert nest.optimizer["config"] == {"learning_rate": 0.05, "momentum": 0.8, "nesterov": True}
    # Overrides on a serialized dict do not modify the original.
    base = sgd_nesterov()
    edited = spec().with_optimizer(base, learning_rate=1.0)
    assert edited.optimizer["config"]["learning_rate"] == 1.0 and base["config"]["learning_rate"] == 0.01
    with pytest.raises(SpecError, match="momentum"):
        sgd_nesterov(momentum=1.5)


def test_validation_errors():
    with pytest.raises(SpecError, match="Keras-serialized model config"):
        ModelSpec(model={"layers": []}, optimizer="adam")
    with pytest.raises(SpecError, match="optimizer"):
        ModelSpec(model=MODEL, optimizer=None)
    with pytest.raises(SpecError, match="unsupported compile arguments"):
        spec(compile_kwargs={"steps_per_execution": 4})
    with pytest.raises(SpecError, match="not a distkeras model spec"):
        ModelSpec.from_dict({"format": "something else"})
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_json("{nope")
    with pytest.raises(SpecError, match="cannot be imported"):
        spec(modules=("no_such_module_for_distkeras_tests",)).import_modules()


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_backends_never_use_pickle_and_import_only_core_of_ours():
    package = pathlib.Path(__file__).resolve().parents[2] / "distkeras" / "backends"
    for path in package.glob("*.py"):
        imports = _imports(path)
        assert not {"pickle", "cloudpickle", "dill", "joblib"} & {i.split(".")[0] for i in imports}, path
        ours = {i for i in imports if i.startswith("distkeras.")}
        assert all(i.startswith(("distkeras.core", "distkeras.backends")) for i in ours), (path, ours)
        assert "allow_pickle=True" not in path.read_text(), path
