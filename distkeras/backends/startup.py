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
* **JAX stays out of a TensorFlow process.** With JAX installed (the ``[jax]`` extra beside
  TensorFlow), importing Keras on TensorFlow imports all of JAX (1.0-1.1 s of its import time
  here; ``select_backend("tensorflow")`` took 0.3-1.0 s longer with it), in the driver and in
  each worker, for two lines that do not need it then: TensorFlow Lite's ``util``
  module does ``from jax import jit`` for its JAX converter, and Keras' Orbax checkpoint callback
  imports JAX to give ``jax.monitoring`` a ``record_scalar`` that JAX versions before the ones
  we test with lacked. :func:`jax_kept_out` refuses JAX to those two modules only, while Keras is
  first imported with TensorFlow (other importers, in any thread, are not affected; the Orbax one
  only when the installed JAX is 0.10 or later, which has ``record_scalar``), then gives
  TensorFlow Lite a ``jit`` that imports JAX on its first call, so its JAX converter still works.
* **JAX's persistent compilation cache.** Compiled XLA programs are kept in a folder and reused
  by later processes (the executors' Python workers of the next run, the next notebook), on by
  default in ``~/.cache/distkeras/jax`` (``$XDG_CACHE_HOME`` respected). ``DISTKERAS_JAX_CACHE``
  chooses: ``0``/``off``/``false`` turns it off, a path picks the folder. A cache folder the user
  configured in JAX already is left alone.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

from distkeras.core.cache_dirs import cache_folder

ENV_JAX_CACHE = "DISTKERAS_JAX_CACHE"
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


_TFLITE_UTIL = "tensorflow.lite.python.util"
_TFLITE_USERS = (_TFLITE_UTIL, "tensorflow.lite.python.lite")  # modules holding ``_jit``
_ORBAX_CALLBACK = "keras.src.callbacks.orbax_checkpoint"
_JAX_WITH_RECORD_SCALAR = (0, 10)  # jax.monitoring.record_scalar exists there (checked: 0.10.2)


def _jax_has_record_scalar() -> bool:
    """Whether the installed JAX is one that has ``jax.monitoring.record_scalar`` (from its
    version, without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        parts = version("jax").split(".")[:2]
        return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts) >= _JAX_WITH_RECORD_SCALAR
    except (PackageNotFoundError, ValueError):
        return False


def _importer_name() -> str | None:
    """The ``__name__`` of the module whose code runs the import being resolved (the first frame
    above the import machinery)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        frame = frame.f_back
    return None if frame is None else frame.f_globals.get("__name__")


class RefuseJaxTo(importlib.abc.MetaPathFinder):
    """An import finder that raises ImportError for ``jax`` imported by the modules in
    ``refused`` (TensorFlow Lite's util module then sets its ``_jit`` to None, Keras' Orbax
    callback skips its shim) and stays out of every other import."""

    def __init__(self, refused: tuple[str, ...] = (_TFLITE_UTIL,)):
        self.refused = frozenset(refused)

    def find_spec(self, name, path=None, target=None):
        if (name == "jax" or name.startswith("jax.")) and _importer_name() in self.refused:
            raise ModuleNotFoundError(f"{name} is imported on first use in a TensorFlow process (distkeras.backends.startup)", name=name)
        return None


def lazy_jit(fun, *args, **kwargs):
    """``jax.jit``, imported on the first call (TensorFlow Lite's ``_jit`` in a TensorFlow process)."""
    import jax

    return jax.jit(fun, *args, **kwargs)


@contextlib.contextmanager
def jax_kept_out(backend: str | None) -> Iterator[bool]:
    """Around the first import of Keras with ``backend``: for TensorFlow with JAX installed and not
    imported yet, TensorFlow Lite's util module (and, with JAX 0.10+, Keras' Orbax callback) does
    not import JAX, and TensorFlow Lite gets :func:`lazy_jit` once the import is over. Yields
    whether it acts."""
    acts = (
        backend == "tensorflow"
        and "jax" not in sys.modules
        and _TFLITE_UTIL not in sys.modules
        and importlib.util.find_spec("jax") is not None
    )
    if not acts:
        yield False
        return
    finder = RefuseJaxTo((_TFLITE_UTIL, _ORBAX_CALLBACK) if _jax_has_record_scalar() else (_TFLITE_UTIL,))
    sys.meta_path.insert(0, finder)
    try:
        yield True
    finally:
        sys.meta_path.remove(finder)
        for name in _TFLITE_USERS:
            module = sys.modules.get(name)
            if module is not None and getattr(module, "_jit", lazy_jit) is None:
                module._jit = lazy_jit


def jax_cache_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The persistent compilation cache folder ``DISTKERAS_JAX_CACHE`` asks for (None: off)."""
    return cache_folder(ENV_JAX_CACHE, "jax", environ)


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


class BackgroundImport:
    """Keras being imported with ``backend`` in a daemon thread (see :func:`import_in_background`);
    ``error`` keeps what the import raised (the caller's own ``import keras`` raises it again)."""

    def __init__(self, backend: str):
        self.backend = backend
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="distkeras-import-keras", daemon=True)

    def _run(self) -> None:
        try:
            from distkeras.backends.select import select_backend

            select_backend(self.backend)
        except BaseException as exc:  # kept, not printed: the caller's own import reports it
            self.error = exc

    def wait(self, timeout: float | None = None) -> "BackgroundImport":
        self.thread.join(timeout)
        return self


def import_in_background(backend: str | None) -> BackgroundImport | None:
    """Start importing Keras with ``backend`` in a daemon thread, for a caller about to wait on
    something else (the driver JVM's start: 5–12 s here, during which the main thread sleeps on a
    socket). The import then costs the caller only what is left of it: measured on 2 cores, Keras
    was ready 1.2 s sooner on JAX and 3.7 s sooner on TensorFlow. A later ``import keras`` in
    another thread waits for this one (Python's per-module import locks).

    Nothing is started (None) without a backend, when Keras is already imported, when
    ``KERAS_BACKEND`` names another backend, or when the backend's packages are missing (the
    caller's import names them). The modules the caller's own
    work shares with Keras' import (pandas, pyarrow: PySpark's session imports them too) are
    imported first, here, so the two threads never wait on each other's half-imported modules.
    """
    if not backend or "keras" in sys.modules:
        return None
    from distkeras.backends.select import missing_packages, normalize_backend

    try:
        backend = normalize_backend(backend)
    except Exception:  # an unknown name: the caller's own select_backend says so
        return None
    if missing_packages(backend):
        return None
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        try:
            same = normalize_backend(chosen) == backend
        except Exception:  # a name Keras does not know: its own import reports it
            same = False
        if not same:
            return None  # the process's own choice differs: left to whoever imports Keras
    for shared in ("numpy", "pandas", "pyarrow"):
        try:
            __import__(shared)
        except ImportError:
            pass
    os.environ["KERAS_BACKEND"] = backend  # here, not in the thread: the caller may be copying os.environ
    job = BackgroundImport(backend)
    job.thread.start()
    return job
