"""Keras models as ``.keras`` files on any fsspec URL: local paths, ``file://``, ``memory://``,
``hdfs://`` (through pyarrow, where a cluster exists), ``s3://`` (with s3fs installed) ...

::

    from distkeras.frontends.model_io import save_model, load_model
    save_model(model, "s3://bucket/models/digits.keras")
    model = load_model("s3://bucket/models/digits.keras")

Saving writes the model with Keras (``model.save``) to a local temporary file, then copies it to
the URL through :mod:`distkeras.storage`, atomically: a reader sees the old file or the new one,
never a torn one. Loading reads the file (a local one in place) and opens it with
``keras.saving.load_model(..., safe_mode=True)``: a file can never run arbitrary code here, so a
model holding a ``Lambda`` layer (pickled Python bytecode) is refused with
:class:`UnsafeModelError`. Unreadable or unwritable URLs raise :class:`ModelIOError` naming the
URL and the reason.

Hadoop-style schemes that fsspec spells otherwise are mapped: ``s3a://`` and ``s3n://`` to
``s3://``, ``file:/x`` to a local path. Importing this module imports neither Keras nor fsspec.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from typing import Any, Mapping

from distkeras import storage

SUFFIX = ".keras"

class ModelIOError(storage.StorageError):
    """A model file cannot be read or written at a URL (the message names the URL and why;
    ``url``, ``kind`` and ``reason`` as in :class:`distkeras.storage.StorageError`)."""


class UnsafeModelError(ValueError):
    """A model file needs code execution to load (e.g. a ``Lambda`` layer); refused in safe mode."""


def normalize_url(url: str | os.PathLike) -> str:
    """A URL fsspec understands (see :func:`distkeras.storage.normalize_url`); ModelIOError if invalid."""
    return storage.normalize_url(url, ModelIOError)


def save_model(model, url: str | os.PathLike, *, overwrite: bool = True, storage_options: Mapping[str, Any] | None = None) -> str:
    """Write ``model`` as a ``.keras`` file to ``url`` (any fsspec URL); return the URL written.

    With ``overwrite=False`` an existing file is an error. Parent folders are created on local
    disks and HDFS. ``storage_options`` go to the fsspec filesystem (credentials, endpoints).
    """
    target = normalize_url(url)
    if not target.endswith(SUFFIX):
        raise ValueError(f"a Keras model file must end with {SUFFIX!r}, got {os.fspath(url)!r}")
    if not hasattr(model, "save"):
        raise TypeError(f"save_model needs a Keras model, got {type(model).__name__}")

    with tempfile.TemporaryDirectory(prefix="distkeras-model-") as tmpdir:
        local = os.path.join(tmpdir, "model" + SUFFIX)
        model.save(local, overwrite=True)
        with open(local, "rb") as src, storage.open_atomic(
            target, what="model", overwrite=overwrite, storage_options=storage_options, error=ModelIOError
        ) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target


def load_model(url: str | os.PathLike, custom_objects: Mapping[str, Any] | None = None, *, compile: bool = True, storage_options: Mapping[str, Any] | None = None):
    """Read a ``.keras`` file from ``url`` (any fsspec URL) in Keras safe mode.

    ``custom_objects`` maps names to custom classes/functions not registered with Keras.
    Raises :class:`ModelIOError` when the URL cannot be read or holds no Keras model, and
    :class:`UnsafeModelError` when loading would run code stored in the file (``Lambda`` layers).
    """
    shown = os.fspath(url)
    with tempfile.TemporaryDirectory(prefix="distkeras-model-") as tmpdir:
        target = normalize_url(shown)
        local = target
        with storage.open_read(target, what="model", storage_options=storage_options, error=ModelIOError) as src:
            if not storage.is_local(target):  # Keras reads local files: copy it here
                local = os.path.join(tmpdir, "model" + SUFFIX)
                with open(local, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        if not zipfile.is_zipfile(local):
            raise ModelIOError(f"cannot read model from {shown!r}: not a Keras {SUFFIX} file (not a zip archive)")
        if not local.endswith(SUFFIX):  # Keras picks the format by extension
            copy = os.path.join(tmpdir, "copy" + SUFFIX)
            shutil.copyfile(local, copy)
            local = copy
        from distkeras.backends.select import import_keras

        keras = import_keras()
        try:
            return keras.saving.load_model(local, custom_objects=dict(custom_objects or {}), compile=compile, safe_mode=True)
        except Exception as exc:
            text = str(exc)
            if "safe_mode" in text or "unsafe" in text.lower():
                raise UnsafeModelError(
                    f"refusing to load {shown!r}: the model needs to run Python code stored in the file "
                    "(e.g. a Lambda layer), which safe mode forbids. Replace Lambda layers with custom "
                    "layers registered with @keras.saving.register_keras_serializable in an importable module. "
                    f"(Keras said: {text.splitlines()[0] if text else type(exc).__name__})"
                ) from exc
            raise ModelIOError(f"cannot load the Keras model in {shown!r}: {type(exc).__name__}: {text}") from exc


__all__ = ["ModelIOError", "UnsafeModelError", "load_model", "normalize_url", "save_model"]
