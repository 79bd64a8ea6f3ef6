"""Backend selection without importing Keras in this process (a fake ``keras`` module stands in)."""

import subprocess
import sys
import types

import pytest

from distkeras.backends import select as sel
from distkeras.backends import BackendError, normalize_backend, select_backend


def test_normalize_backend():
    assert normalize_backend("TF") == "tensorflow"
    assert normalize_backend(" jax ") == "jax"
    with pytest.raises(BackendError, match="unknown Keras backend 'mxnet'"):
        normalize_backend("mxnet")


def fake_keras(backend):
    module = types.ModuleType("keras")
    module.backend = types.SimpleNamespace(backend=lambda: backend)
    return module


def test_switching_after_keras_import_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", fake_keras("tensorflow"))
    with pytest.raises(BackendError) as info:
        select_backend("jax")
    message = str(info.value)
    assert "already imported" in message and "'tensorflow'" in message and "KERAS_BACKEND=jax" in message
    assert select_backend("tf") == "tensorflow"
    assert select_backend() == "tensorflow"


@pytest.mark.parametrize(
    "backend, extra", [("jax", 'pip install "distkeras[jax]"'), ("tensorflow", 'pip install "distkeras[tensorflow]"')]
)
def test_missing_packages_name_the_pip_extra(monkeypatch, backend, extra):
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    real = sel.importlib.util.find_spec
    monkeypatch.setattr(sel.importlib.util, "find_spec", lambda name: None if name in ("jax", "tensorflow") else real(name))
    monkeypatch.setenv("KERAS_BACKEND", "nothing-yet")
    with pytest.raises(BackendError) as info:
        select_backend(backend)
    assert extra in str(info.value) and "not installed" in str(info.value)
    import os

    assert os.environ["KERAS_BACKEND"] == "nothing-yet"  # unchanged on failure


def test_importing_the_package_does_not_import_keras():
    code = (
        "import sys, distkeras.backends as b; b.ModelSpec; b.make_batches; b.select_backend; "
        "import distkeras.backends.adapter, distkeras.backends.weights; "
        "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
