"""Process-wide settings that cut the first run's fixed costs, applied once Keras is imported.

:func:`prepare_process` runs from :func:`distkeras.backends.select.select_backend` (on the driver
and in every executor's Python worker, so both sides get the same treatment):

* **TensorFlow stays out of a JAX (or torch) process.** Keras' serializers ask
  ``tf.available`` before ``isinstance(obj, tf.TensorShape)``-style checks, and ``available``
  imports TensorFlow when it is installed (1.8 s and about 0.5 GB on the test machine, in the
  driver and in each worker). Those checks can only be true for objects TensorFlow made, which
  cannot exist before TensorFlow is imported, so in the serializer modules ``tf`` is replaced by a
  view whose ``available`` means "installed and already imported". The same goes for
  ``keras.utils.set_random_seed``, which seeds TensorFlow's generator too when TensorFlow is
  available: a process that never imported TensorFlow draws nothing from it (it still seeds
  TensorFlow once imported). Everything else (the preprocessing layers that need ``tf.data``)
  keeps Keras' own lazy module.
* **JAX's persistent compilation cache.** Compiled XLA programs are kept in a folder and reused
  by later processes (the executors' Python workers of the next run, the next notebook), on by
  default in ``~/.cache/distkeras/jax`` (``$XDG_CACHE_HOME`` respected). ``DISTKERAS_JAX_CACHE``
  chooses: ``0``/``off``/``false`` turns it off, a path picks the folder. A cache folder the user
  configured in JAX already is left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_JAX_CACHE = "DISTKERAS_JAX_CACHE"
_OFF = {"0", "off", "false", "no"}
_SERIALIZER_MODULES = ("keras.src.saving.serialization_lib", "keras.src.legacy.saving.json_utils", "keras.src.utils.rng_utils")

_done: set[str] = set()


class ImportedOnly:
    """A stand-in for Keras' lazy ``tensorflow`` module whose ``available`` is True only once
    TensorFlow has been imported by someone else; attributes come from the real module."""

    def __init__(self, lazy):
        self._lazy = lazy

    @property
    def available(self) -> bool:
        return "tensorflow" in sys.modules and bool(self._lazy.available)

    def __getattr__(self, name: str):
        return getattr(self._lazy, name)

    def __repr__(self) -> str:
        return f"ImportedOnly({self._lazy!r})"


def keep_tensorflow_lazy() -> list[str]:
    """Make Keras' serializers stop importing TensorFlow (see the module's docstring). Returns the
    modules changed; nothing when TensorFlow is the backend or already imported."""
    if "tensorflow" in sys.modules:
        return []
    changed = []
    for name in _SERIALIZER_MODULES:
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name, fromlist=["tf"])
            except ImportError:  # another Keras layout: nothing to do
                continue
        lazy = getattr(module, "tf", None)
        if lazy is None or isinstance(lazy, ImportedOnly) or not hasattr(type(lazy), "available"):
            continue
        module.tf = ImportedOnly(lazy)
        changed.append(name)
    return changed


def jax_cache_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The persistent compilation cache folder ``DISTKERAS_JAX_CACHE`` asks for (None: off)."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_JAX_CACHE, "").strip()
    if value.lower() in _OFF:
        return None
    if value and value.lower() not in {"1", "on", "true", "yes"}:
        return Path(value).expanduser()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "distkeras" / "jax"


def enable_jax_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (every program, however small or quick to
    compile: the ones a training window compiles take 0.3–1 s each). Returns the folder in use,
    None when off or when the folder cannot be created (then JAX compiles as usual)."""
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:  # the user's own choice
        return str(configured)
    folder = jax_cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(folder)


def prepare_process(backend: str) -> None:
    """Apply the settings above for ``backend`` (the imported Keras's), once per process."""
    if backend in _done:
        return
    _done.add(backend)
    if backend != "tensorflow":
        keep_tensorflow_lazy()
    if backend == "jax":
        enable_jax_cache()
