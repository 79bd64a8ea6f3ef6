"""distkeras.backends.startup: no TensorFlow in a JAX process, JAX's persistent compilation cache.

The checks that need a fresh process (what gets imported, what a second process finds in the
cache) run in subprocesses with the JAX backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distkeras.backends.startup import ENV_JAX_CACHE, jax_cache_dir

ROOT = Path(__file__).resolve().parents[2]

# Builds a model spec, serializes it, rebuilds an adapter and trains one window, as the driver and
# a worker do; prints what it saw.
CHILD = r"""
import json, os, sys, time
from distkeras.backends import KerasAdapter, ModelSpec, select_backend
select_backend("jax")
import keras, numpy as np
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3, activation="softmax")])
spec = ModelSpec.from_model(model, keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
adapter = KerasAdapter.from_spec(ModelSpec.from_json(spec.to_json()))
x = [np.ones((4, 8), np.float32)] * 2
y = [np.zeros(4, np.int64)] * 2
loss = adapter.train_window(x, y)["loss"]
import jax
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "loss": float(loss), "cache": jax.config.jax_compilation_cache_dir}))
"""


def _child(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV_JAX_CACHE}
    env.update(KERAS_BACKEND="jax", PYTHONPATH=str(ROOT), **env_extra)
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_jax_process_neither_imports_tensorflow_and_fills_the_compilation_cache(tmp_path):
    pytest.importorskip("jax")
    cache = tmp_path / "jax-cache"
    first = _child({ENV_JAX_CACHE: str(cache)})
    assert first["tensorflow"] is False  # serializing and rebuilding a model left TensorFlow out
    assert first["cache"] == str(cache)
    entries = {p.name for p in cache.iterdir()}
    assert any("train" in name or "lambda" in name for name in entries), entries  # the window's program
    second = _child({ENV_JAX_CACHE: str(cache)})
    assert second["loss"] == pytest.approx(first["loss"])  # a cached program computes the same
    assert {p.name for p in cache.iterdir()} >= entries


def test_the_cache_can_be_turned_off(tmp_path):
    pytest.importorskip("jax")
    off = _child({ENV_JAX_CACHE: "0", "XDG_CACHE_HOME": str(tmp_path)})
    assert off["cache"] is None
    assert not (tmp_path / "distkeras").exists()


def test_cache_dir_from_the_environment(tmp_path):
    assert jax_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "distkeras" / "jax"
    assert jax_cache_dir({ENV_JAX_CACHE: "1", "XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "distkeras" / "jax"
    assert jax_cache_dir({ENV_JAX_CACHE: str(tmp_path / "c")}) == tmp_path / "c"
    for off in ("0", "off", "False", "no"):
        assert jax_cache_dir({ENV_JAX_CACHE: off}) is None


def test_serializers_still_see_tensorflow_objects_once_it_is_imported():
    """The stand-in only answers "not available" while TensorFlow is not imported."""
    from distkeras.backends.startup import ImportedOnly

    class Lazy:
        available = True
        TensorShape = tuple

    view = ImportedOnly(Lazy())
    assert view.TensorShape is tuple
    assert view.available == ("tensorflow" in sys.modules)


# Starts the background import, does other work meanwhile, then imports Keras as a user would.
BACKGROUND = r"""
import json, os, sys
from distkeras.backends.startup import import_in_background
job = import_in_background(sys.argv[1])
busy = sum(i * i for i in range(200_000))  # the caller's own work while Keras is imported
import keras
job and job.wait(300)
print(json.dumps({
    "started": job is not None, "error": None if job is None else repr(job.error), "backend": keras.backend.backend(),
    "env": os.environ.get("KERAS_BACKEND"), "second": import_in_background(sys.argv[1]) is None,
}))
"""


def _background(backend: str, env_backend: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    if env_backend:
        env["KERAS_BACKEND"] = env_backend
    proc = subprocess.run([sys.executable, "-c", BACKGROUND, backend], env=env, capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_keras_imported_in_the_background_is_the_one_the_caller_gets():
    pytest.importorskip("jax")
    out = _background("jax", None)
    assert out["started"] and out["error"] == "None"
    assert out["backend"] == "jax" and out["env"] == "jax"
    assert out["second"]  # Keras is imported: nothing more to start


def test_no_background_import_against_the_process_own_choice():
    pytest.importorskip("jax")
    pytest.importorskip("tensorflow")
    out = _background("jax", "tensorflow")
    assert not out["started"]
    assert out["backend"] == "tensorflow" and out["env"] == "tensorflow"  # the process's own KERAS_BACKEND decided


# JAX stays out of a TensorFlow process: each check in a fresh interpreter, where JAX is not imported yet
FINDER_CHILD = r"""
import json, sys
from distkeras.backends.startup import RefuseJaxTo, jax_kept_out
seen = {}
with jax_kept_out("tensorflow") as acts:
    seen["acts"] = acts
    seen["finder"] = any(isinstance(f, RefuseJaxTo) for f in sys.meta_path)
    tflite = {"__name__": "tensorflow.lite.python.util"}
    exec("try:\n    from jax import jit as _jit\nexcept ImportError:\n    _jit = None", tflite)
    seen["tflite_got_jax"] = tflite["_jit"] is not None
    seen["jax_after_tflite"] = "jax" in sys.modules
    orbax = {"__name__": "keras.src.callbacks.orbax_checkpoint"}
    exec("try:\n    import jax\n    got = True\nexcept ImportError:\n    got = False", orbax)
    seen["orbax_got_jax"] = orbax["got"]
    other = {"__name__": "users_module"}
    exec("from jax import jit", other)  # anyone else imports it as usual
    seen["jax_after_other"] = "jax" in sys.modules
seen["finder_after"] = any(isinstance(f, RefuseJaxTo) for f in sys.meta_path)
print(json.dumps(seen))
"""

TF_CHILD = r"""
import json, sys
from distkeras.backends import select_backend
select_backend("tensorflow")
import keras
from tensorflow.lite.python import lite, util
from distkeras.backends.startup import lazy_jit
seen = {"jax_after_keras": "jax" in sys.modules, "util_jit": util._jit is lazy_jit, "lite_jit": lite._jit is lazy_jit}
doubled = util._jit(lambda x: x * 2)(3.0)  # TensorFlow Lite's jit still works: JAX comes now
seen.update(doubled=float(doubled), jax_after_call="jax" in sys.modules)
print(json.dumps(seen))
"""


def _fresh(code: str, backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_finder_refuses_jax_to_tensorflow_lite_only():
    pytest.importorskip("jax")
    seen = _fresh(FINDER_CHILD, "tensorflow")
    assert seen == {
        "acts": True,
        "finder": True,
        "tflite_got_jax": False,
        "jax_after_tflite": False,
        "orbax_got_jax": False,  # the installed JAX (0.10+) has the record_scalar the shim adds
        "jax_after_other": True,
        "finder_after": False,
    }


def test_a_tensorflow_process_imports_jax_only_when_tensorflow_lite_calls_it():
    pytest.importorskip("jax")
    pytest.importorskip("tensorflow")
    seen = _fresh(TF_CHILD, "tensorflow")
    assert seen == {"jax_after_keras": False, "util_jit": True, "lite_jit": True, "doubled": 6.0, "jax_after_call": True}


def test_nothing_is_refused_for_other_backends_or_once_jax_is_imported():
    from distkeras.backends.startup import jax_kept_out

    with jax_kept_out("jax") as acts:
        assert acts is False
    pytest.importorskip("jax")
    import jax  # noqa: F401 - imported in this process now

    with jax_kept_out("tensorflow") as acts:
        assert acts is False
