"""Keras models as ``.keras`` files on any fsspec URL: local paths, ``file://``, ``memory://``,
``hdfs://`` (through pyarrow, where a cluster exists), ``s3://`` (with s3fs installed) ...

::

    from distkeras.frontends.model_io import save_model, load_model
    save_model(model, "s3://bucket/models/digits.keras")
    model = load_model("s3://bucket/models/digits.keras")

Saving writes the model with Keras (``model.save``) to a local temporary file, then copies it to
the URL: on a local disk the file appears atomically (a temporary name in the target folder, then
a rename), on HDFS through a temporary name and a rename, on object stores (S3, GCS, ...) as one
upload, which they make visible at once. Loading copies the file to a local temporary file and
reads it with ``keras.saving.load_model(..., safe_mode=True)``: a file can never run arbitrary
code here, so a model holding a ``Lambda`` layer (pickled Python bytecode) is refused with
:class:`UnsafeModelError`. Unreadable or unwritable URLs raise :class:`ModelIOError` naming the
URL and the reason.

Hadoop-style schemes that fsspec spells otherwise are mapped: ``s3a://`` and ``s3n://`` to
``s3://``, ``file:/x`` to a local path. Importing this module imports neither Keras nor fsspec.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import zipfile
from typing import Any, Mapping

SUFFIX = ".keras"

#: fsspec protocols whose "rename" is atomic, so a temp name + move is worth it.
_RENAME_ATOMIC = ("hdfs", "arrow_hdfs", "webhdfs", "viewfs")
#: fsspec protocols of object stores: one upload is atomic, folders need no creation.
_OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "r2")


class ModelIOError(OSError):
    """A model file cannot be read or written at a URL (the message names the URL and why)."""


class UnsafeModelError(ValueError):
    """A model file needs code execution to load (e.g. a ``Lambda`` layer); refused in safe mode."""


def normalize_url(url: str | os.PathLike) -> str:
    """A URL fsspec understands: ``s3a://``/``s3n://`` -> ``s3://``; ``file:/x`` and
    ``file:///x`` -> ``/x``; local paths made absolute; other URLs unchanged."""
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise ModelIOError(f"invalid model URL {url!r}")
    lower = text.lower()
    for alias in ("s3a://", "s3n://"):
        if lower.startswith(alias):
            return "s3://" + text[len(alias) :]
    if lower.startswith("file:"):
        rest = text[5:]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):  # file://host/path: only localhost is local
                host, _, path = rest.partition("/")
                if host not in ("", "localhost"):
                    raise ModelIOError(f"cannot use {text!r}: a file:// URL with host {host!r} is not local")
                rest = "/" + path
        return os.path.abspath(rest)
    if "://" not in text:
        return os.path.abspath(os.path.expanduser(text))
    return text


def _is_local(url: str) -> bool:
    return "://" not in url


def _filesystem(url: str, storage_options: Mapping[str, Any] | None, action: str):
    """(fs, path) for ``url``; ModelIOError for an unknown scheme or a missing driver."""
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with the spark extra
        raise ModelIOError(f"cannot {action} {url!r}: fsspec is not installed (pip install 'distkeras[spark]')") from exc
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:
        raise ModelIOError(f"cannot {action} {url!r}: the filesystem driver is missing ({exc})") from exc
    except Exception as exc:  # unknown protocol, bad options, no connection to the cluster ...
        raise ModelIOError(f"cannot {action} {url!r}: {type(exc).__name__}: {exc}") from exc
    return fs, path


def _protocols(fs) -> tuple[str, ...]:
    proto = fs.protocol
    return tuple(proto) if isinstance(proto, (tuple, list)) else (proto,)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file or directory"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory, not a .keras file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"{type(exc).__name__}: {exc}"


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

    if _is_local(target):
        folder = os.path.dirname(target)
        if os.path.isdir(target):
            raise ModelIOError(f"cannot write model to {target!r}: it is a directory")
        if not overwrite and os.path.exists(target):
            raise ModelIOError(f"cannot write model to {target!r}: the file exists (overwrite=False)")
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=folder)
            os.close(fd)
        except OSError as exc:
            raise ModelIOError(f"cannot write model to {target!r}: {_reason(exc)}") from exc
        try:
            model.save(tmp, overwrite=True)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise ModelIOError(f"cannot write model to {target!r}: {_reason(exc)}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    fs, path = _filesystem(target, storage_options, "write model to")
    protocols = _protocols(fs)
    with tempfile.TemporaryDirectory(prefix="distkeras-model-") as tmpdir:
        local = os.path.join(tmpdir, "model" + SUFFIX)
        model.save(local, overwrite=True)
        try:
            if not overwrite and fs.exists(path):
                raise ModelIOError(f"cannot write model to {target!r}: the file exists (overwrite=False)")
            parent = fs._parent(path)
            if parent and not any(p in _OBJECT_STORES for p in protocols):
                fs.makedirs(parent, exist_ok=True)
            if any(p in _RENAME_ATOMIC for p in protocols):
                tmp_path = f"{parent}/.tmp-{uuid.uuid4().hex}{SUFFIX}" if parent else f".tmp-{uuid.uuid4().hex}{SUFFIX}"
                fs.put_file(local, tmp_path)
                try:
                    if fs.exists(path):
                        fs.rm(path)
                    fs.mv(tmp_path, path)
                except Exception:
                    fs.rm(tmp_path)
                    raise
            else:
                fs.put_file(local, path)
        except ModelIOError:
            raise
        except Exception as exc:
            raise ModelIOError(f"cannot write model to {target!r}: {_reason(exc)}") from exc
    return target


def _fetch(url: str, storage_options: Mapping[str, Any] | None, local: str) -> str:
    """Copy the file at ``url`` to ``local`` (or return the local path itself); ModelIOError if unreadable."""
    target = normalize_url(url)
    if _is_local(target):
        try:
            with open(target, "rb"):
                pass
        except OSError as exc:
            raise ModelIOError(f"cannot read model from {target!r}: {_reason(exc)}") from exc
        return target
    fs, path = _filesystem(target, storage_options, "read model from")
    try:
        if fs.isdir(path):
            raise IsADirectoryError(path)
        with fs.open(path, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except Exception as exc:
        raise ModelIOError(f"cannot read model from {target!r}: {_reason(exc)}") from exc
    return local


def load_model(url: str | os.PathLike, custom_objects: Mapping[str, Any] | None = None, *, compile: bool = True, storage_options: Mapping[str, Any] | None = None):
    """Read a ``.keras`` file from ``url`` (any fsspec URL) in Keras safe mode.

    ``custom_objects`` maps names to custom classes/functions not registered with Keras.
    Raises :class:`ModelIOError` when the URL cannot be read or holds no Keras model, and
    :class:`UnsafeModelError` when loading would run code stored in the file (``Lambda`` layers).
    """
    shown = os.fspath(url)
    with tempfile.TemporaryDirectory(prefix="distkeras-model-") as tmpdir:
        local = _fetch(shown, storage_options, os.path.join(tmpdir, "model" + SUFFIX))
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
