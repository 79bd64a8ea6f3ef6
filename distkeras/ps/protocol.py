"""The parameter server's protocol: msgpack maps in length-prefixed frames, arrays from an
allow-list, HMAC authentication, and the zero-copy socket I/O for them, in one module.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. The body
is a map ``{"v": SCHEMA_VERSION, "op": OP, ...fields}``. NumPy arrays travel as msgpack
extension type 1 whose data is a msgpack array ``[dtype, shape, raw bytes]``; only the
dtypes in :data:`ALLOWED_DTYPES` decode. There is no pickle anywhere on this path.

Every decoding failure raises :class:`WireError` with a message that names what was
wrong; nothing else escapes :func:`decode` and :func:`decode_frame`.

Authentication: the server sends a random challenge; the client answers with
HMAC-SHA256(secret, context ‖ challenge) and a challenge of its own, which the server
answers in turn. Only holders of the run's secret pass, on either side.

Socket I/O without needless copies:

* :func:`pack_parts` builds the same bytes as ``frame(encode(op, **fields))`` but as a
  list of buffers: large NumPy arrays appear as memoryviews of their own data, so a 4 MB
  center goes to the kernel straight from the array (``socket.sendmsg``).
* :class:`FrameReader` reads frames with ``recv_into`` a buffer it keeps and grows, and
  checks the announced length against the limit before allocating anything.
* :func:`decode_frame` is :func:`decode` with large arrays viewed in the receive buffer.

The bytes on the wire are the same either way; a test checks ``pack_parts`` against
``encode`` for every kind of message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time
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
    dtype, shape, start, count = _array_head(data, len(data))
    return _array(data, dtype, shape, start, count)


def _array_head(data: Any, length: int) -> tuple[str, list[int], int, int]:
    """Check the head of an array extension whose data has ``length`` bytes (``data`` holds
    at least its head): ``(dtype, shape, offset of the raw bytes, element count)``."""
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
    if start + nbytes != length:
        raise WireError(f"malformed array: data header says {nbytes} bytes, {length - start} follow")
    itemsize = np.dtype(dtype).itemsize
    count = 1
    for d in shape:
        count *= d
    if count * itemsize != nbytes:
        raise WireError(f"array of dtype {dtype} and shape {shape} needs {count * itemsize} bytes, got {nbytes}")
    return dtype, shape, start, count


def _array(buffer: Any, dtype: str, shape: list[int], offset: int, count: int) -> np.ndarray:
    """The checked array's values, viewed in ``buffer`` from ``offset`` (little-endian)."""
    dt = np.dtype(dtype).newbyteorder("<")
    arr = np.frombuffer(buffer, dtype=dt, count=count, offset=offset).reshape(shape)
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


# -- socket I/O without needless copies ---------------------------------------
# arrays at least this large travel as views; smaller ones are packed by msgpack
ZERO_COPY_MIN = 16 * 1024
_SENDMSG_MAX_PARTS = 512


class Dropped(ConnectionError):
    """The peer closed the connection (possibly in the middle of a frame)."""


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + struct.pack(">B", n)
    if n < 1 << 16:
        return b"\xc5" + struct.pack(">H", n)
    return b"\xc6" + struct.pack(">I", n)


def _ext_header(n: int, code: int) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if n in fixed:
        return struct.pack(">Bb", fixed[n], code)
    if n < 1 << 8:
        return struct.pack(">BBb", 0xC7, n, code)
    if n < 1 << 16:
        return struct.pack(">BHb", 0xC8, n, code)
    return struct.pack(">BIb", 0xC9, n, code)


def _zero_copy(obj: Any) -> bool:
    return (
        isinstance(obj, np.ndarray)
        and obj.nbytes >= ZERO_COPY_MIN
        and obj.dtype.name in ALLOWED_DTYPES
        and obj.dtype.byteorder in ("=", "<", "|")
        and obj.flags.c_contiguous
        and np.little_endian
    )


class _Builder:
    def __init__(self) -> None:
        self.packer = msgpack.Packer(default=_default, use_bin_type=True, autoreset=True)
        self.parts: list[Any] = []
        self.small: list[bytes] = []

    def flush(self) -> None:
        if self.small:
            self.parts.append(b"".join(self.small))
            self.small = []

    def add(self, obj: Any) -> None:
        if isinstance(obj, dict):
            self.small.append(self.packer.pack_map_header(len(obj)))
            for k, v in obj.items():
                self.small.append(self.packer.pack(k))
                self.add(v)
        elif isinstance(obj, (list, tuple)):
            self.small.append(self.packer.pack_array_header(len(obj)))
            for v in obj:
                self.add(v)
        elif _zero_copy(obj):
            raw = memoryview(obj).cast("B")
            inner = b"\x93" + self.packer.pack(obj.dtype.name) + self.packer.pack(list(obj.shape)) + _bin_header(raw.nbytes)
            self.small.append(_ext_header(len(inner) + raw.nbytes, _ARRAY_EXT) + inner)
            self.flush()
            self.parts.append(raw)
        else:
            self.small.append(self.packer.pack(obj))


def pack_parts(op: str, **fields: Any) -> list[Any]:
    """A whole frame (header included) as a list of buffers; joined, it equals
    ``frame(encode(op, **fields))``. Raises WireError like ``encode``."""
    if op not in OPS:
        raise WireError(f"unknown op {op!r}; known ops: {sorted(OPS)}")
    b = _Builder()
    try:
        b.add({"v": SCHEMA_VERSION, "op": op, **fields})
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode {op!r} message: {exc}") from None
    b.flush()
    total = sum(memoryview(p).nbytes for p in b.parts)
    if total > 0xFFFFFFFF:
        raise WireError(f"message of {total} bytes does not fit a frame")
    b.parts[0] = HEADER.pack(total) + b.parts[0]
    return b.parts


# -- decoding with large arrays viewed in place ------------------------------------------------
_MAX_SCAN_TOKENS = 4096  # our messages have a few dozen; anything bigger goes to msgpack as is
_FIXED_WIDTH = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_LENGTH_PREFIXED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin8/16/32, str8/16/32
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # array16/32, map16/32
_EXTS = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext8/16/32 (fixext are 0xD4..0xD8)


def _large_arrays(body: memoryview, min_size: int, prefix: bool = False) -> list[tuple[int, int, int]] | None:
    """``(token start, ext data start, ext data end)`` of every array extension whose data
    has at least ``min_size`` bytes, if ``body`` is one well-formed msgpack value of few
    tokens; otherwise None (and msgpack itself decodes or reports the problem).

    ``prefix``: ``body`` is only the start of a message; return the first such extension
    as soon as its header has been seen (its data may lie beyond ``body``)."""
    n = len(body)
    pos, pending, tokens, found = 0, 1, 0, []
    try:
        while pending:
            tokens += 1
            if pos >= n or tokens > _MAX_SCAN_TOKENS:
                return None
            b = body[pos]
            pending -= 1
            if b <= 0x7F or b >= 0xE0:
                pos += 1
            elif b <= 0x8F:
                pending += 2 * (b & 0x0F)
                pos += 1
            elif b <= 0x9F:
                pending += b & 0x0F
                pos += 1
            elif b <= 0xBF:
                pos += 1 + (b & 0x1F)
            elif b in _FIXED_WIDTH:
                pos += 1 + _FIXED_WIDTH[b]
            elif b in _LENGTH_PREFIXED:
                w = _LENGTH_PREFIXED[b]
                pos += 1 + w + int.from_bytes(body[pos + 1 : pos + 1 + w], "big")
            elif b in _CONTAINERS:
                w, per_item = _CONTAINERS[b]
                pending += per_item * int.from_bytes(body[pos + 1 : pos + 1 + w], "big")
                pos += 1 + w
            elif 0xD4 <= b <= 0xD8:
                pos += 2 + (1 << (b - 0xD4))
            elif b in _EXTS:
                w = _EXTS[b]
                length = int.from_bytes(body[pos + 1 : pos + 1 + w], "big")
                start = pos + 2 + w
                if body[pos + 1 + w] == _ARRAY_EXT and length >= min_size and (prefix or start + length <= n):
                    found.append((pos, start, start + length))
                    if prefix:
                        return found
                pos = start + length
            else:  # 0xC1: never used
                return None
    except IndexError:
        return None
    return found if pos == n else None


def _first_array_data(prefix: memoryview, min_size: int) -> int | None:
    """Offset of the first large array's raw bytes, from the first bytes of a message."""
    spans = _large_arrays(prefix, min_size, prefix=True)
    if not spans:
        return None
    start = spans[0][1]
    head = bytes(prefix[start : start + 512])
    try:  # [dtype, shape, bin header + raw], as _ext_hook reads it
        up = msgpack.Unpacker(raw=False, max_buffer_size=len(head) or 1)
        up.feed(head)
        if up.read_array_header() != 3:
            return None
        up.skip()
        up.skip()
        pos = up.tell()
        width = _BIN_HEADERS.get(head[pos])
    except Exception:
        return None
    return None if width is None else start + pos + 1 + width


def decode_frame(body: memoryview, max_size: int = DEFAULT_MAX_FRAME, min_size: int = ZERO_COPY_MIN, *, tail: np.ndarray | None = None) -> dict[str, Any]:
    """``decode`` with arrays of ``min_size`` bytes or more returned as views into
    ``body`` instead of copies: no allocation, no copy for a 4 MB center or commit.

    The views are only valid while ``body`` is (a :class:`FrameReader` reuses its buffer
    at the next read): copy what must outlive the request. Every array still goes
    through the core wire's checks (dtype allow-list, shape, byte count).

    ``tail``: the message's last value is an array that :meth:`FrameReader.read_into`
    received (and checked) elsewhere; ``body`` is the message up to it.
    """
    body = memoryview(body)
    if body.nbytes > max_size:
        raise WireError(f"message of {body.nbytes} bytes exceeds the limit of {max_size}")
    if tail is not None:
        nonce = os.urandom(16)
        small = b"".join((body, b"\xc7\x14" + bytes([_ARRAY_EXT]) + nonce + struct.pack(">I", 0)))

        def tail_hook(code: int, data: bytes) -> Any:
            if code == _ARRAY_EXT and len(data) == 20 and data[:16] == nonce:
                return tail
            return _ext_hook(code, data)

        return decode(small, max_size, ext_hook=tail_hook)
    spans = _large_arrays(body, min_size) if body.nbytes >= min_size else None
    if not spans:
        return decode(body, max_size)
    # the message without its large arrays, each replaced by a tiny extension holding a
    # per-call random nonce and its index (a peer cannot forge a reference)
    nonce = os.urandom(16)
    pieces, views, last = [], [], 0
    for i, (token, start, end) in enumerate(spans):
        pieces.append(body[last:token])
        pieces.append(b"\xc7\x14" + bytes([_ARRAY_EXT]) + nonce + struct.pack(">I", i))
        views.append(body[start:end])
        last = end
    pieces.append(body[last:])
    small = b"".join(pieces)

    def hook(code: int, data: bytes) -> Any:
        if code == _ARRAY_EXT and len(data) == 20 and data[:16] == nonce:
            return _ext_hook(code, views[struct.unpack(">I", data[16:])[0]])
        return _ext_hook(code, data)

    return decode(small, max_size, ext_hook=hook)


def parts_nbytes(parts: list[Any]) -> int:
    return sum(memoryview(p).nbytes for p in parts)


def send_parts(sock: socket.socket, parts: list[Any]) -> int:
    """Send every buffer in order (scatter/gather, no joining copy). Returns bytes sent."""
    views = [memoryview(p).cast("B") for p in parts]
    total = sum(v.nbytes for v in views)
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i : i + _SENDMSG_MAX_PARTS])
        while i < len(views) and sent >= views[i].nbytes:
            sent -= views[i].nbytes
            i += 1
        if sent:
            views[i] = views[i][sent:]
    return total


ALIGN = 64  # large arrays are received at addresses that are multiples of this
_PEEK = 512  # bytes read first to find where the first large array's data will be


class FrameReader:
    """Reads length-prefixed frames from one socket into a reusable buffer.

    The body is placed in the buffer so that the first large array's data starts at an
    ``ALIGN``-byte aligned address: NumPy runs its fast loops on the in-place views
    (misaligned float32 data is about twice as slow to check and add).
    """

    def __init__(self, sock: socket.socket, initial: int = 64 * 1024):
        self.sock = sock
        self._header = bytearray(HEADER.size)
        self._have = 0  # header bytes already read by wait_start
        self._alloc(initial)

    def _alloc(self, size: int) -> None:
        self._buf = bytearray(size)
        self._addr = np.frombuffer(self._buf, np.uint8).ctypes.data if size else 0

    def _fill(self, view: memoryview, started: bool, deadline: float | None = None) -> None:
        got = 0
        while got < view.nbytes:
            if deadline is not None:  # one deadline for the whole frame, not one per recv
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the frame did not arrive before the deadline ({got} of {view.nbytes} bytes)")
                self.sock.settimeout(left)
            n = self.sock.recv_into(view[got:])
            if not n:
                where = "in the middle of a frame" if (started or got) else "between frames"
                raise Dropped(f"connection closed by peer {where}")
            got += n

    def wait_start(self) -> None:
        """Block until the first byte of the next frame is here (it stays in the header)."""
        n = self.sock.recv_into(memoryview(self._header)[:1])
        if not n:
            raise Dropped("connection closed by peer between frames")
        self._have = 1

    def read(self, max_size: int, deadline: float | None = None) -> memoryview:
        """The next frame's body as a view of the internal buffer (valid until the next read).

        Raises WireError for a length over ``max_size`` (nothing is allocated, the rest of
        the frame is not read: the caller should close) and Dropped on EOF. ``deadline``
        (a ``time.monotonic()`` value): the whole frame must have arrived by then, however
        the peer spaces its bytes, else TimeoutError (the socket's timeout is changed).
        """
        header = memoryview(self._header)
        self._fill(header[self._have :], started=self._have > 0, deadline=deadline)
        self._have = 0
        length = frame_length(bytes(self._header), max_size)
        if length + ALIGN > len(self._buf):
            self._alloc(min(max(length, 2 * len(self._buf)), max_size) + ALIGN)
        buf = memoryview(self._buf)
        head = min(length, _PEEK)
        self._fill(buf[:head], started=True, deadline=deadline)
        shift = 0
        if length >= ZERO_COPY_MIN:
            data = _first_array_data(buf[:head], ZERO_COPY_MIN)
            if data is not None:
                shift = -(self._addr + data) % ALIGN
                if shift:
                    buf[shift : shift + head] = bytes(buf[:head])
        self._fill(buf[shift + head : shift + length], started=True, deadline=deadline)
        return buf[shift : shift + length]

    def read_into(self, max_size: int, into: np.ndarray) -> tuple[memoryview, np.ndarray | None]:
        """Like :meth:`read`, but when the frame ends with an array of ``into``'s dtype and
        size (a reply carrying a center), its values are received straight into ``into``
        (no copy afterwards). Returns ``(body, tail)``: with ``tail`` (a view of ``into``
        shaped as sent), ``body`` is the message up to that array, for
        ``decode_frame(body, tail=tail)``; otherwise ``tail`` is None and ``body`` the
        whole message. If the connection fails midway, ``into`` may hold part of a frame.
        """
        if not (isinstance(into, np.ndarray) and into.flags.c_contiguous and into.flags.writeable and into.dtype.name in ALLOWED_DTYPES and into.dtype.byteorder in ("=", "<", "|") and np.little_endian and into.nbytes >= ZERO_COPY_MIN):
            return self.read(max_size), None
        header = memoryview(self._header)
        self._fill(header[self._have :], started=self._have > 0)
        self._have = 0
        length = frame_length(bytes(self._header), max_size)
        head = min(length, _PEEK)
        if head > len(self._buf):
            self._alloc(max(_PEEK, len(self._buf)))
        buf = memoryview(self._buf)
        self._fill(buf[:head], started=True)
        spans = _large_arrays(buf[:head], ZERO_COPY_MIN, prefix=True) if length >= ZERO_COPY_MIN else None
        found = None
        if spans and spans[0][2] == length:  # the first large array ends the message
            token, start, end = spans[0]
            try:
                dtype, shape, offset, count = _array_head(buf[start:head], end - start)
            except WireError:
                pass  # read as usual: decoding reports it
            else:
                if dtype == into.dtype.name and count == into.size and start + offset <= head:
                    found = (token, start + offset, dtype, shape)
        if found is None:  # an error reply, another shape, ...: the whole frame into the buffer
            if length > len(self._buf):
                self._alloc(min(max(length, 2 * len(self._buf)), max_size) + ALIGN)
                fresh = memoryview(self._buf)
                fresh[:head] = buf[:head]
                buf = fresh
            self._fill(buf[head:length], started=True)
            return buf[:length], None
        token, data, dtype, shape = found
        sink = memoryview(into).cast("B")
        early = head - data  # values that came with the first bytes
        sink[:early] = buf[data:head]
        self._fill(sink[early:], started=True)
        return buf[:token], _array(into, dtype, shape, 0, into.size)
