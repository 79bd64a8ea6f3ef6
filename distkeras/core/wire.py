"""The wire format: msgpack maps in length-prefixed frames, arrays from an allow-list, HMAC auth.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. The body
is a map ``{"v": SCHEMA_VERSION, "op": OP, ...fields}``. NumPy arrays travel as msgpack
extension type 1 whose data is a msgpack array ``[dtype, shape, raw bytes]``; only the
dtypes in :data:`ALLOWED_DTYPES` decode. There is no pickle anywhere on this path.

Every decoding failure raises :class:`WireError` with a message that names what was
wrong; nothing else escapes :func:`decode`.

Authentication: the server sends a random challenge; the client answers with
HMAC-SHA256(secret, context ‖ challenge). Only holders of the run's secret pass.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Any

import msgpack
import numpy as np

SCHEMA_VERSION = 1
HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1 << 30  # 1 GiB
OPS = frozenset({"challenge", "hello", "pull", "commit", "stats", "bye", "ok", "error"})
ALLOWED_DTYPES = frozenset({"float16", "float32", "float64", "int8", "uint8", "int32", "int64", "bool"})
_ARRAY_EXT = 1
_AUTH_CONTEXT = b"distkeras-ps-auth-v1\x00"
MAX_NDIM = 32
_HEAD_MAX = 1024  # the [dtype, shape] head of an array is far smaller
_BIN_HEADERS = {0xC4: 1, 0xC5: 2, 0xC6: 4}  # msgpack bin8/16/32 marker -> length bytes


class WireError(ValueError):
    """A frame or message that does not follow the wire schema."""


# -- arrays ------------------------------------------------------------------------
def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in ALLOWED_DTYPES:
            raise WireError(f"dtype {obj.dtype} is not allowed on the wire; allowed: {sorted(ALLOWED_DTYPES)}")
        # np.ascontiguousarray would turn a 0-d array into shape (1,): keep the shape as it is
        arr = obj if obj.flags.c_contiguous else np.array(obj, order="C")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        # a flat view of the contiguous array: no copy, and valid for 0-d and empty arrays
        raw = memoryview(arr.reshape(-1)).cast("B") if arr.size else b""
        data = msgpack.packb([arr.dtype.name, list(arr.shape), raw], use_bin_type=True)
        return msgpack.ExtType(_ARRAY_EXT, data)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise WireError(f"cannot encode a {type(obj).__name__} on the wire")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _ARRAY_EXT:
        raise WireError(f"unknown msgpack extension type {code}")
    # [dtype, shape, raw]: the small head is unpacked by msgpack; the raw bytes are not
    # copied again but viewed in place (in the copy msgpack made for us, or in the caller's
    # buffer when an ext_hook passes a memoryview)
    try:
        head = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=_HEAD_MAX)
        head.feed(data[:_HEAD_MAX])
        if head.read_array_header() != 3:
            raise ValueError("expected [dtype, shape, data]")
        dtype = head.unpack()
        shape = head.unpack()
        start = head.tell()
    except WireError:
        raise
    except Exception as exc:  # malformed extension body
        raise WireError(f"malformed array: {type(exc).__name__}: {exc}") from None
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise WireError(f"array dtype {dtype!r} is not allowed; allowed: {sorted(ALLOWED_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise WireError(f"array shape {shape!r} is not a list of non-negative integers")
    marker = data[start] if start < len(data) else None
    if marker not in _BIN_HEADERS:
        raise WireError("array data must be bytes")
    width = _BIN_HEADERS[marker]
    start += 1 + width
    if start > len(data):
        raise WireError("malformed array: truncated data header")
    nbytes = int.from_bytes(data[start - width : start], "big")
    if start + nbytes != len(data):
        raise WireError(f"malformed array: data header says {nbytes} bytes, {len(data) - start} follow")
    dt = np.dtype(dtype).newbyteorder("<")
    count = 1
    for d in shape:
        count *= d
    if count * dt.itemsize != nbytes:
        raise WireError(f"array of dtype {dtype} and shape {shape} needs {count * dt.itemsize} bytes, got {nbytes}")
    arr = np.frombuffer(data, dtype=dt, count=count, offset=start).reshape(shape)
    return arr.astype(np.dtype(dtype), copy=False) if dt != np.dtype(dtype) else arr


# -- messages ------------------------------------------------------------------------
def encode(op: str, **fields: Any) -> bytes:
    """A message body (no frame header)."""
    if not isinstance(op, str) or op not in OPS:
        raise WireError(f"unknown op {op!r}; known ops: {sorted(OPS)}")
    if "v" in fields:
        raise WireError("'v' is reserved for the schema version")
    try:
        return msgpack.packb({"v": SCHEMA_VERSION, "op": op, **fields}, default=_default, use_bin_type=True)
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode {op!r} message: {exc}") from None


def decode(body: bytes | bytearray | memoryview, max_size: int = DEFAULT_MAX_FRAME, *, ext_hook: Any = None) -> dict[str, Any]:
    """Decode and check one message body. Raises only :class:`WireError`.

    ``ext_hook`` replaces the array decoder (it must apply :func:`_ext_hook`'s checks to
    anything a peer sent; the socket layer uses it to view large arrays in place)."""
    if len(body) > max_size:
        raise WireError(f"message of {len(body)} bytes exceeds the limit of {max_size}")
    try:
        msg = msgpack.unpackb(
            body,
            raw=False,
            ext_hook=ext_hook or _ext_hook,
            strict_map_key=True,
        )
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several types for garbage
        raise WireError(f"malformed message: {type(exc).__name__}: {exc}") from None
    if not isinstance(msg, dict):
        raise WireError(f"a message must be a map, got {type(msg).__name__}")
    version = msg.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise WireError(f"unsupported schema version {version!r}; this side speaks {SCHEMA_VERSION}")
    op = msg.get("op")
    if not isinstance(op, str) or op not in OPS:  # an unhashable op (a list, a map) must not raise TypeError
        raise WireError(f"unknown op {op!r}; known ops: {sorted(OPS)}")
    return msg


def frame(body: bytes) -> bytes:
    """Prefix a body with its length."""
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes, max_size: int = DEFAULT_MAX_FRAME) -> int:
    """The body length announced by a 4-byte header, checked against ``max_size`` before
    anything is allocated."""
    if len(header) != HEADER.size:
        raise WireError(f"truncated frame header: {len(header)} of {HEADER.size} bytes")
    (length,) = HEADER.unpack(header)
    if length > max_size:
        raise WireError(f"frame of {length} bytes exceeds the limit of {max_size}")
    return length


def require(msg: dict[str, Any], name: str, kind: type | tuple[type, ...], *, minimum: int | None = None) -> Any:
    """A field of ``msg`` of the given type, or WireError naming the field."""
    if name not in msg:
        raise WireError(f"{msg.get('op')!r} message lacks field {name!r}")
    value = msg[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise WireError(f"field {name!r} of {msg.get('op')!r} must be {kind}, got bool")
    if not isinstance(value, kinds):
        raise WireError(f"field {name!r} of {msg.get('op')!r} must be {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise WireError(f"field {name!r} of {msg.get('op')!r} must be >= {minimum}, got {value}")
    return value


# -- authentication ------------------------------------------------------------------
def new_secret() -> bytes:
    """A fresh random run secret (32 bytes)."""
    return os.urandom(32)


def new_challenge() -> bytes:
    return os.urandom(32)


def auth_response(secret: bytes, challenge: bytes) -> bytes:
    """HMAC-SHA256 of the challenge under the run secret."""
    if not secret:
        raise ValueError("the run secret must not be empty")
    return hmac.new(secret, _AUTH_CONTEXT + challenge, hashlib.sha256).digest()


def verify_response(secret: bytes, challenge: bytes, response: Any) -> bool:
    """Constant-time check of a client's answer to ``challenge``."""
    if not isinstance(response, (bytes, bytearray)):
        return False
    return hmac.compare_digest(auth_response(secret, challenge), bytes(response))
