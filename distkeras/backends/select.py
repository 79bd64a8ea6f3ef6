"""Choosing the Keras backend of this process.

Keras fixes its backend when it is first imported (``KERAS_BACKEND``), so the choice
must happen before anything imports ``keras``. One backend per process: the driver
and every Spark executor choose separately; the weights travel as flat float32
vectors, so they may differ.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from distkeras.backends.errors import BackendError

#: Backends the adapters support, with the packages each needs and how to install them.
BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
    "jax": (("keras", "jax", "jaxlib"), 'pip install "distkeras[jax]"'),
    "tensorflow": (("keras", "tensorflow"), 'pip install "distkeras[tensorflow]"'),
    "torch": (("keras", "torch"), 'pip install keras torch'),
}
_ALIASES = {"tf": "tensorflow", "pytorch": "torch"}


def normalize_backend(name: str) -> str:
    """``"tf"`` -> ``"tensorflow"``; raise :class:`BackendError` on an unknown name."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise BackendError(f"unknown Keras backend {name!r}; choose one of {sorted(BACKENDS)}")
    return key


def missing_packages(name: str) -> list[str]:
    """The packages backend ``name`` needs that are not importable here."""
    packages, _ = BACKENDS[normalize_backend(name)]
    return [p for p in packages if importlib.util.find_spec(p) is None]


def imported_backend() -> str | None:
    """The backend of the Keras already imported in this process, or None if Keras is not imported."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return keras.backend.backend()
    except AttributeError:  # a half-imported or foreign module named keras
        return None


def select_backend(name: str | None = None) -> str:
    """Fix this process's Keras backend and import Keras with it; return the backend name.

    ``name`` is ``"jax"``, ``"tensorflow"`` (``"tf"``) or ``"torch"``. With ``None``, use
    ``KERAS_BACKEND`` if set, else whatever Keras picks (its ``keras.json``, default
    TensorFlow). Raises :class:`BackendError` if Keras is already imported with another
    backend (one backend per process) or if the backend's packages are missing (the
    message names the pip extra to install).
    """
    if name is None:
        current = imported_backend()
        if current is not None:
            return _prepared(current)
        name = os.environ.get("KERAS_BACKEND")
    if name is not None:
        name = normalize_backend(name)
        current = imported_backend()
        if current is not None:
            if current != name:
                raise BackendError(
                    f"Keras is already imported in this process with the {current!r} backend, "
                    f"so it cannot switch to {name!r}: Keras fixes its backend at import. Use one "
                    f"backend per process: set KERAS_BACKEND={name} (or call "
                    f"distkeras.backends.select_backend({name!r})) before anything imports keras, "
                    f"or run in a new process."
                )
            return _prepared(current)
        missing = missing_packages(name)
        if missing:
            raise BackendError(
                f"the Keras backend {name!r} needs {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed: {BACKENDS[name][1]}"
            )
        os.environ["KERAS_BACKEND"] = name
    from distkeras.backends.startup import jax_kept_out

    try:
        with jax_kept_out(name):  # TensorFlow's import would import JAX too, if installed
            import keras
    except ImportError as exc:  # e.g. keras.json names a backend that is not installed
        backend = name or "tensorflow"
        hint = BACKENDS.get(backend, ((), 'pip install "distkeras[jax]"'))[1]
        raise BackendError(f"cannot import Keras with backend {backend!r} ({exc}): {hint}") from exc
    actual = keras.backend.backend()
    if name is not None and actual != name:  # pragma: no cover - keras ignores KERAS_BACKEND
        raise BackendError(f"asked for Keras backend {name!r} but Keras started with {actual!r}")
    return _prepared(actual)


def _prepared(backend: str) -> str:
    """``backend``, after the process-wide start-up settings for it (distkeras.backends.startup:
    no TensorFlow import in a JAX process, JAX's persistent compilation cache)."""
    from distkeras.backends.startup import prepare_process

    prepare_process(backend)
    return backend


def import_keras():
    """Import Keras with the selected backend (see :func:`select_backend`) and return the module."""
    select_backend()
    import keras

    return keras
