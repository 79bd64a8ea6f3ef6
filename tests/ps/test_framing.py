"""Zero-copy framing: byte-identical to the core wire format, decoding identical to wire.decode."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distkeras.ps import protocol as wire
from distkeras.ps.protocol import ZERO_COPY_MIN, FrameReader, decode_frame, pack_parts, send_parts

F32 = np.float32


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"a": 1, "b": "x", "c": None, "d": True, "e": 1.5, "f": b"raw", "g": [1, 2, {"h": -3}]},
        {"center": np.arange(100_000, dtype=F32), "clock": 7},
        {"update": {"codec": "none", "values": np.ones(5000, F32)}, "seq": 3, "pull": True},
        {"update": {"codec": "topk", "indices": np.arange(20_000, dtype=np.int32), "values": np.ones(20_000, F32)}},
        {"small": np.arange(3, dtype=np.int8), "zero_d": np.array(2.5, F32), "empty": np.zeros((0, 4), F32)},
        {"big_endian": np.arange(10_000, dtype=">f4"), "strided": np.arange(40_000, dtype=F32)[::2]},
        {"sizes": [np.zeros(n, np.uint8) for n in (255, 256, 65535, 65536, 70_000)]},
        {"matrix": np.ones((300, 200), np.float64), "s": "x" * 70_000, "b": b"y" * 70_000},
    ],
)
def test_pack_parts_is_byte_identical_and_decode_frame_agrees(fields):
    joined = b"".join(bytes(p) for p in pack_parts("ok", **fields))
    assert joined == wire.frame(wire.encode("ok", **fields))
    body = memoryview(bytearray(joined[4:]))
    _assert_same(wire.decode(body), decode_frame(body))


def _assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)  # NaN


def test_large_arrays_are_views_into_the_buffer():
    body = memoryview(bytearray(wire.encode("ok", center=np.arange(ZERO_COPY_MIN, dtype=F32), small=np.ones(3, F32))))
    msg = decode_frame(body)
    assert np.shares_memory(msg["center"], np.frombuffer(body, np.uint8))
    assert not np.shares_memory(msg["small"], np.frombuffer(body, np.uint8))


def _big_message(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(ZERO_COPY_MIN // 4, ZERO_COPY_MIN // 2))
    return wire.encode("commit", seq=int(rng.integers(0, 2**40)), samples=3, pull=bool(seed % 2), update={"codec": "topk", "indices": np.arange(n, dtype=np.int32), "values": rng.normal(size=n).astype(F32)}, note="x" * int(rng.integers(0, 300)))


@settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 2**16),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
    head_flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3),
    cut=st.none() | st.floats(0, 1),
)
def test_decode_frame_agrees_with_wire_decode_on_damaged_messages(seed, flips, head_flips, cut):
    body = bytearray(_big_message(seed))
    for where, value in flips:
        body[int(where * len(body))] = value
    for where, value in head_flips:  # damage concentrated where the structure is
        body[min(where, len(body) - 1)] = value
    if cut is not None:
        body = body[: int(cut * len(body))]
    try:
        expected = wire.decode(bytes(body))
    except wire.WireError:
        with pytest.raises(wire.WireError):
            decode_frame(memoryview(body))
        return
    _assert_same(expected, decode_frame(memoryview(body)))


def test_a_forged_reference_extension_is_rejected():
    """decode_frame's internal placeholders cannot be forged by a peer."""
    import msgpack

    fake = msgpack.ExtType(1, b"\0" * 16 + b"\0\0\0\0")
    body = msgpack.packb({"v": 1, "op": "ok", "a": fake, "big": msgpack.ExtType(1, msgpack.packb(["uint8", [ZERO_COPY_MIN], b"\0" * ZERO_COPY_MIN]))}, use_bin_type=True)
    with pytest.raises(wire.WireError):
        decode_frame(memoryview(body))


def test_frame_reader_and_send_parts_over_a_socket_pair():
    a, b = socket.socketpair()
    with a, b:
        center = np.arange(300_000, dtype=F32)
        parts = pack_parts("ok", center=center, clock=3)
        import threading

        t = threading.Thread(target=send_parts, args=(a, parts))
        t.start()
        reader = FrameReader(b, initial=16)
        msg = decode_frame(reader.read(1 << 24))
        t.join()
        assert msg["clock"] == 3 and msg["center"].tobytes() == center.tobytes()
        a.sendall(wire.HEADER.pack(1 << 30))
        with pytest.raises(wire.WireError, match="exceeds the limit"):
            reader.read(1 << 20)


def _read_into_over_a_socket(parts, into):
    import threading

    a, b = socket.socketpair()
    with a, b:
        t = threading.Thread(target=send_parts, args=(a, parts))
        t.start()
        reader = FrameReader(b, initial=4096)
        body, tail = reader.read_into(1 << 26, into)
        msg = decode_frame(body, tail=tail)
        t.join()
    return msg, tail


@pytest.mark.parametrize("n", [ZERO_COPY_MIN // 4, 300_000])
def test_read_into_receives_a_final_center_straight_into_the_callers_array(n):
    center = np.random.default_rng(n).standard_normal(n).astype(F32)
    fields = {"status": "applied", "clock": 9, "round": 0, "staleness": 1, "note": "x" * 300, "center": center}
    out = np.full(n, np.nan, F32)
    msg, tail = _read_into_over_a_socket(pack_parts("ok", **fields), out)
    assert tail is not None and np.shares_memory(msg["center"], out)
    assert out.tobytes() == center.tobytes()
    # the same message as wire.decode of the same bytes
    _assert_same(wire.decode(wire.encode("ok", **fields)), msg)


@pytest.mark.parametrize(
    "fields, into",
    [
        ({"center": np.arange(20_000, dtype=F32), "clock": 1}, np.zeros(20_000, F32)),  # not the last field
        ({"clock": 1, "center": np.arange(20_000, dtype=F32)}, np.zeros(20_001, F32)),  # another length
        ({"clock": 1, "center": np.arange(20_000, dtype=np.int32)}, np.zeros(20_000, F32)),  # another dtype
        ({"code": "rejected", "message": "no"}, np.zeros(20_000, F32)),  # an error reply
        ({"clock": 1, "center": np.arange(20_000, dtype=F32)}, np.zeros(40_000, F32)[::2]),  # not contiguous
        ({"note": "x" * 700, "center": np.arange(20_000, dtype=F32)}, np.zeros(20_000, F32)),  # head past the first bytes read
        ({"clock": 1, "center": np.arange(20_000, dtype=F32)}, np.zeros(20_000, F32)),  # the normal case
    ],
)
def test_read_into_falls_back_to_the_buffer_and_decodes_the_same(fields, into):
    before = into.copy()
    msg, tail = _read_into_over_a_socket(pack_parts("ok", **fields), into)
    _assert_same(wire.decode(wire.encode("ok", **fields)), msg)
    sunk = tail is not None
    assert sunk == ("clock" in fields and list(fields)[-1] == "center" and fields["center"].dtype == into.dtype and fields["center"].size == into.size and into.flags.c_contiguous)
    if not sunk:
        assert into.tobytes() == before.tobytes()  # untouched


def test_read_into_checks_the_array_head_like_decode():
    """A head that wire.decode refuses (a dtype off the allow-list, bytes that do not match
    the shape) is never received into the caller's array."""
    import msgpack
    import threading

    for head in (["object", [20_000]], ["float32", [19_999]]):
        ext = msgpack.ExtType(1, msgpack.packb([*head, b"\0" * 80_000], use_bin_type=True))
        body = msgpack.packb({"v": 1, "op": "ok", "center": ext}, use_bin_type=True)
        a, b = socket.socketpair()
        with a, b:
            t = threading.Thread(target=a.sendall, args=(wire.frame(body),))
            t.start()
            into = np.ones(20_000, F32)
            raw, tail = FrameReader(b).read_into(1 << 26, into)
            t.join()
        assert tail is None and (into == 1).all()
        with pytest.raises(wire.WireError):
            decode_frame(raw)
