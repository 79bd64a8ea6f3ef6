"""Socket I/O for the core wire format (``distkeras.core.wire``) without needless copies.

* :func:`pack_parts` builds the same bytes as ``wire.frame(wire.encode(op, **fields))``
  but as a list of buffers: large NumPy arrays appear as memoryviews of their own data,
  so a 4 MB center goes to the kernel straight from the array (``socket.sendmsg``).
* :class:`FrameReader` reads frames with ``recv_into`` a buffer it keeps and grows, and
  checks the announced length against the limit before allocating anything.

The bytes on the wire are exactly the core format; a test checks ``pack_parts`` against
``wire.encode`` for every kind of message.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

import msgpack
import numpy as np

from distkeras.core import wire

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
        and obj.dtype.name in wire.ALLOWED_DTYPES
        and obj.dtype.byteorder in ("=", "<", "|")
        and obj.flags.c_contiguous
        and np.little_endian
    )


class _Builder:
    def __init__(self) -> None:
        self.packer = msgpack.Packer(default=wire._default, use_bin_type=True, autoreset=True)
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
            self.small.append(_ext_header(len(inner) + raw.nbytes, wire._ARRAY_EXT) + inner)
            self.flush()
            self.parts.append(raw)
        else:
            self.small.append(self.packer.pack(obj))


def pack_parts(op: str, **fields: Any) -> list[Any]:
    """A whole frame (header included) as a list of buffers; joined, it equals
    ``wire.frame(wire.encode(op, **fields))``. Raises WireError like ``wire.encode``."""
    if op not in wire.OPS:
        raise wire.WireError(f"unknown op {op!r}; known ops: {sorted(wire.OPS)}")
    b = _Builder()
    try:
        b.add({"v": wire.SCHEMA_VERSION, "op": op, **fields})
    except wire.WireError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise wire.WireError(f"cannot encode {op!r} message: {exc}") from None
    b.flush()
    total = sum(memoryview(p).nbytes for p in b.parts)
    if total > 0xFFFFFFFF:
        raise wire.WireError(f"message of {total} bytes does not fit a frame")
    b.parts[0] = wire.HEADER.pack(total) + b.parts[0]
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
                if body[pos + 1 + w] == wire._ARRAY_EXT and length >= min_size and (prefix or start + length <= n):
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
    try:  # [dtype, shape, bin header + raw], as wire._ext_hook reads it
        up = msgpack.Unpacker(raw=False, max_buffer_size=len(head) or 1)
        up.feed(head)
        if up.read_array_header() != 3:
            return None
        up.skip()
        up.skip()
        pos = up.tell()
        width = wire._BIN_HEADERS.get(head[pos])
    except Exception:
        return None
    return None if width is None else start + pos + 1 + width


def decode_frame(body: memoryview, max_size: int = wire.DEFAULT_MAX_FRAME, min_size: int = ZERO_COPY_MIN) -> dict[str, Any]:
    """``wire.decode`` with arrays of ``min_size`` bytes or more returned as views into
    ``body`` instead of copies: no allocation, no copy for a 4 MB center or commit.

    The views are only valid while ``body`` is (a :class:`FrameReader` reuses its buffer
    at the next read): copy what must outlive the request. Every array still goes
    through the core wire's checks (dtype allow-list, shape, byte count).
    """
    body = memoryview(body)
    if body.nbytes > max_size:
        raise wire.WireError(f"message of {body.nbytes} bytes exceeds the limit of {max_size}")
    spans = _large_arrays(body, min_size) if body.nbytes >= min_size else None
    if not spans:
        return wire.decode(body, max_size)
    # the message without its large arrays, each replaced by a tiny extension holding a
    # per-call random nonce and its index (a peer cannot forge a reference)
    nonce = os.urandom(16)
    pieces, views, last = [], [], 0
    for i, (token, start, end) in enumerate(spans):
        pieces.append(body[last:token])
        pieces.append(b"\xc7\x14" + bytes([wire._ARRAY_EXT]) + nonce + struct.pack(">I", i))
        views.append(body[start:end])
        last = end
    pieces.append(body[last:])
    small = b"".join(pieces)

    def hook(code: int, data: bytes) -> Any:
        if code == wire._ARRAY_EXT and len(data) == 20 and data[:16] == nonce:
            return wire._ext_hook(code, views[struct.unpack(">I", data[16:])[0]])
        return wire._ext_hook(code, data)

    return wire.decode(small, max_size, ext_hook=hook)


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
        self._header = bytearray(wire.HEADER.size)
        self._have = 0  # header bytes already read by wait_start
        self._alloc(initial)

    def _alloc(self, size: int) -> None:
        self._buf = bytearray(size)
        self._addr = np.frombuffer(self._buf, np.uint8).ctypes.data if size else 0

    def _fill(self, view: memoryview, started: bool) -> None:
        got = 0
        while got < view.nbytes:
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

    def read(self, max_size: int) -> memoryview:
        """The next frame's body as a view of the internal buffer (valid until the next read).

        Raises WireError for a length over ``max_size`` (nothing is allocated, the rest of
        the frame is not read: the caller should close) and Dropped on EOF.
        """
        header = memoryview(self._header)
        self._fill(header[self._have :], started=self._have > 0)
        self._have = 0
        length = wire.frame_length(bytes(self._header), max_size)
        if length + ALIGN > len(self._buf):
            self._alloc(min(max(length, 2 * len(self._buf)), max_size) + ALIGN)
        buf = memoryview(self._buf)
        head = min(length, _PEEK)
        self._fill(buf[:head], started=True)
        shift = 0
        if length >= ZERO_COPY_MIN:
            data = _first_array_data(buf[:head], ZERO_COPY_MIN)
            if data is not None:
                shift = -(self._addr + data) % ALIGN
                if shift:
                    buf[shift : shift + head] = bytes(buf[:head])
        self._fill(buf[shift + head : shift + length], started=True)
        return buf[shift : shift + length]
