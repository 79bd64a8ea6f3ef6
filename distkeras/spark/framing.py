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


class FrameReader:
    """Reads length-prefixed frames from one socket into a reusable buffer."""

    def __init__(self, sock: socket.socket, initial: int = 64 * 1024):
        self.sock = sock
        self._buf = bytearray(initial)
        self._header = bytearray(wire.HEADER.size)
        self._have = 0  # header bytes already read by wait_start

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
        if length > len(self._buf):
            self._buf = bytearray(min(max(length, 2 * len(self._buf)), max_size))
        body = memoryview(self._buf)[:length]
        self._fill(body, started=True)
        return body
