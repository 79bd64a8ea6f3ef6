"""Whole files on any fsspec URL: written atomically, read with a clear error.

One helper for everything distkeras keeps on disk or in an object store (parameter-server
checkpoints, ``.keras`` models, Spark ML stage folders)::

    from distkeras.storage import open_atomic, read_bytes, write_bytes_atomic
    write_bytes_atomic("s3://bucket/run/spec.json", data)
    with open_atomic("/data/run/shard-00.npz") as f:   # a binary file; published on exit
        np.savez(f, **arrays)
    data = read_bytes("hdfs://nn/run/spec.json", what="model spec")

A reader sees the old file or the new one, never a torn file:

* local paths (and ``file:`` URLs): a temporary file in the target's own folder is written,
  flushed and fsync'ed, renamed over the target (``os.replace``, atomic within a folder), and
  the folder is fsync'ed so the rename survives a crash;
* object stores (S3, GCS, Azure, ...): one upload, which they make visible at once when the
  file is closed;
* other filesystems (HDFS, memory, SFTP, ...): a temporary name next to the target, then a
  move over it.

If anything fails the temporary file is removed and the old file is left as it was.

Every failure raises :class:`StorageError` (an ``OSError``) whose message names the URL and
the cause: no such file, a directory, permission denied, an unknown protocol, a missing
optional package (``s3fs``, ``gcsfs``, ...). Callers pass ``error=`` a subclass of their own
(``CheckpointError``, ``ModelIOError``) so that users keep catching the type they know.

Hadoop spellings are mapped (``s3a://``/``s3n://`` -> ``s3://``, ``file:/x`` -> ``/x``).
This module imports fsspec only when a non-local URL is used, and nothing of Keras or Spark:
every layer of the package may use it (``core`` excepted, which does no I/O).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Iterator, Mapping

# StorageError.kind
MISSING = "missing"  # no such file
DIRECTORY = "directory"  # a folder where a file was expected
PERMISSION = "permission"
EXISTS = "exists"  # overwrite=False and the file is there
PROTOCOL = "protocol"  # fsspec does not know the URL's protocol
PACKAGE = "package"  # the protocol needs a package that is not installed (s3fs, fsspec itself, ...)
IO_ERROR = "io"  # anything else

#: fsspec protocols of object stores: one upload is atomic; folders need not be made.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "r2"})


class StorageError(OSError):
    """A file that cannot be read or written at a URL.

    ``url``: the URL; ``kind``: one of ``missing``, ``directory``, ``permission``, ``exists``,
    ``protocol``, ``package``, ``io``; ``reason``: the cause in words (also in the message).
    """

    url: str = ""
    kind: str = IO_ERROR
    reason: str = ""

    @classmethod
    def about(cls, message: str, url: str, kind: str = IO_ERROR, reason: str = "") -> "StorageError":
        """An error with its message and the URL, kind and reason set."""
        exc = cls(message)
        exc.url, exc.kind, exc.reason = url, kind, reason or message
        return exc


def _fail(error: type[StorageError], message: str, url: str, kind: str, reason: str) -> StorageError:
    return error.about(message, url, kind, reason)


def _classify(exc: BaseException) -> tuple[str, str]:
    """(kind, reason in words) for an exception from a filesystem."""
    if isinstance(exc, FileNotFoundError):
        return MISSING, "no such file or directory"
    if isinstance(exc, IsADirectoryError):
        return DIRECTORY, "it is a directory, not a file"
    if isinstance(exc, PermissionError):
        return PERMISSION, "permission denied"
    if isinstance(exc, FileExistsError):
        return EXISTS, "the file exists"
    if isinstance(exc, NotADirectoryError):
        return IO_ERROR, f"a part of the path is a file, not a folder ({exc.filename or exc})"
    text = str(exc).strip().splitlines()
    return IO_ERROR, f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- URLs --------------------------------------------------------------------------------
def normalize_url(url: str | os.PathLike, error: type[StorageError] = StorageError) -> str:
    """A URL fsspec understands: ``s3a://``/``s3n://`` -> ``s3://``; ``file:/x`` and
    ``file:///x`` -> ``/x``; local paths made absolute; other URLs unchanged."""
    try:
        text = os.fspath(url)
    except TypeError:
        text = None
    if not isinstance(text, str) or not text:
        raise _fail(error, f"invalid URL {url!r}", str(url), IO_ERROR, "invalid URL")
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
                    reason = f"a file:// URL with host {host!r} is not local"
                    raise _fail(error, f"cannot use {text!r}: {reason}", text, PROTOCOL, reason)
                rest = "/" + path
        return os.path.abspath(rest)
    if "://" not in text:
        return os.path.abspath(os.path.expanduser(text))
    return text


def is_local(url: str) -> bool:
    """Whether a normalized URL is a local path."""
    return "://" not in url


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None, *, what: str = "file", error: type[StorageError] = StorageError) -> tuple[Any, str]:
    """``(fsspec filesystem, path)`` for a URL; StorageError (kind ``protocol`` or ``package``)
    when fsspec does not know the protocol or its driver package is missing."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with the spark extra
        reason = "fsspec is not installed (pip install fsspec)"
        raise _fail(error, f"cannot open {what} location {url!r}: {reason}", url, PACKAGE, reason) from None
    try:
        return fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:  # e.g. "Install s3fs to access S3"
        reason = f"a package the protocol needs is missing: {exc}"
        raise _fail(error, f"cannot open {what} location {url!r}: {reason}", url, PACKAGE, reason) from exc
    except ValueError as exc:
        kind = PROTOCOL if "protocol not known" in str(exc).lower() else IO_ERROR
        reason = f"unknown protocol ({exc})" if kind == PROTOCOL else _classify(exc)[1]
        raise _fail(error, f"cannot open {what} location {url!r}: {reason}", url, kind, reason) from exc
    except Exception as exc:  # bad options, no connection to the cluster, ...
        kind, reason = _classify(exc)
        raise _fail(error, f"cannot open {what} location {url!r}: {reason}", url, kind, reason) from exc


def _protocols(fs: Any) -> set[str]:
    proto = fs.protocol
    return set(proto) if isinstance(proto, (tuple, list)) else {proto}


def _tmp_name(path: str) -> str:
    """A temporary name in the same folder as ``path`` (hidden, unique, never a real target)."""
    folder, _, name = path.rpartition("/")
    return f"{folder}/.{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}" if folder or path.startswith("/") else f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


# -- writing -------------------------------------------------------------------------------
@contextmanager
def open_atomic(
    url: str | os.PathLike,
    *,
    what: str = "file",
    overwrite: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    error: type[StorageError] = StorageError,
) -> Iterator[IO[bytes]]:
    """A binary file to write; on a clean exit it replaces ``url`` atomically (see the module
    docstring), on an exception nothing changes at ``url``.

    Folders are created as needed. ``overwrite=False`` refuses an existing file. Failures of
    the storage (and ``OSError`` raised inside the block) raise ``error`` naming the URL;
    other exceptions from the block propagate unchanged.
    """
    target = normalize_url(url, error)

    def failed(exc: BaseException) -> StorageError:
        kind, reason = _classify(exc)
        return _fail(error, f"cannot write {what} to {target!r}: {reason}", target, kind, reason)

    if is_local(target):
        ctx = _local_writer(target)
    else:
        fs, path = filesystem(target, storage_options, what=what, error=error)
        ctx = _remote_writer(fs, path)
    body_exc: BaseException | None = None
    try:
        if not overwrite and (os.path.lexists(target) if is_local(target) else fs.exists(path)):
            raise FileExistsError(target)
        with ctx as f:
            try:
                yield f
            except BaseException as exc:
                body_exc = exc
                raise
    except StorageError:
        raise
    except Exception as exc:
        if exc is body_exc and not isinstance(exc, OSError):
            raise  # the caller's own error, not the storage's (the temporary file is gone)
        raise failed(exc) from exc


@contextmanager
def _local_writer(path: str) -> Iterator[IO[bytes]]:
    if os.path.isdir(path):
        raise IsADirectoryError(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = _tmp_name(path)
    f = open(tmp, "xb")  # the default mode (0666 & ~umask), like any file the user writes
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable; some filesystems cannot fsync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


@contextmanager
def _remote_writer(fs: Any, path: str) -> Iterator[IO[bytes]]:
    parent = path.rpartition("/")[0]
    if _protocols(fs) & OBJECT_STORES:
        # Spooled to a local temporary file, then one upload, which the store makes visible
        # at once (a file opened on the store itself would upload its part on an error too).
        with tempfile.NamedTemporaryFile(prefix="distkeras-upload-") as f:
            yield f
            f.flush()
            fs.put_file(f.name, path)
        return
    if parent:
        try:
            fs.makedirs(parent, exist_ok=True)
        except Exception:  # some filesystems have no folders to make
            pass
    tmp = _tmp_name(path)
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        try:
            fs.mv(tmp, path)
        except Exception:  # HDFS-like renames refuse an existing target
            if not fs.exists(path):
                raise
            fs.rm(path)
            fs.mv(tmp, path)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except Exception:
            pass
        raise


def write_bytes_atomic(
    url: str | os.PathLike,
    data: bytes | bytearray | memoryview,
    *,
    what: str = "file",
    overwrite: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    error: type[StorageError] = StorageError,
) -> str:
    """Write ``data`` to ``url`` atomically; returns the (normalized) URL written."""
    with open_atomic(url, what=what, overwrite=overwrite, storage_options=storage_options, error=error) as f:
        f.write(data)
    return normalize_url(url, error)


# -- reading -------------------------------------------------------------------------------
@contextmanager
def open_read(
    url: str | os.PathLike,
    *,
    what: str = "file",
    storage_options: Mapping[str, Any] | None = None,
    error: type[StorageError] = StorageError,
) -> Iterator[IO[bytes]]:
    """The file at ``url`` opened for binary reading. Failing to open it, and ``OSError``
    raised inside the block (a failed read), raise ``error`` naming the URL and the cause."""
    target = normalize_url(url, error)

    def failed(exc: BaseException) -> StorageError:
        kind, reason = _classify(exc)
        return _fail(error, f"cannot read {what} from {target!r}: {reason}", target, kind, reason)

    try:
        if is_local(target):
            f = open(target, "rb")
        else:
            fs, path = filesystem(target, storage_options, what=what, error=error)
            try:
                f = fs.open(path, "rb")
            except IsADirectoryError:
                raise
            except Exception:
                if _isdir(fs, path):  # some filesystems say "not found" for a folder
                    raise IsADirectoryError(path) from None
                raise
    except StorageError:
        raise
    except Exception as exc:
        raise failed(exc) from exc
    with f:
        try:
            yield f
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise failed(exc) from exc


def read_bytes(
    url: str | os.PathLike,
    *,
    what: str = "file",
    storage_options: Mapping[str, Any] | None = None,
    error: type[StorageError] = StorageError,
) -> bytes:
    """The whole file at ``url``; ``error`` (a StorageError) naming the URL and the cause."""
    with open_read(url, what=what, storage_options=storage_options, error=error) as f:
        return f.read()


def _isdir(fs: Any, path: str) -> bool:
    try:
        return bool(fs.isdir(path))
    except Exception:
        return False


__all__ = [
    "StorageError",
    "filesystem",
    "is_local",
    "normalize_url",
    "open_atomic",
    "open_read",
    "read_bytes",
    "write_bytes_atomic",
]
