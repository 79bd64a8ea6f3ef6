"""Malformed input against a running parameter server over real sockets (hypothesis).

11,000 cases in all: garbage bodies, structurally wrong messages, commits with one
defect each (wrong layout length, bad dtype, NaN/Inf, wrong field types, bad codec
fields), truncated frames, huge length prefixes and garbage before authentication.
After each case the server has answered with an error or closed the connection; the
center stays bitwise unchanged and the server keeps serving.
"""

from __future__ import annotations

import math
import socket
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distkeras.core import codecs
from distkeras.ps.protocol import ZERO_COPY_MIN
from distkeras.ps import ParameterServerService, PSClient
from tests.ps.helpers import SECRET, authenticate, closed_or_error, raw_connect

SIZE = 64
F32 = np.float32
FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def server():
    center = np.random.default_rng(1).normal(size=SIZE).astype(F32)
    svc = ParameterServerService("downpour", center, 2, SECRET, max_frame=64 * 1024)
    svc.start()
    svc.initial = center.tobytes()
    yield svc
    svc.stop()


class Link:
    """One authenticated connection, reused until the server closes it."""

    def __init__(self, address):
        self.address = address
        self.sock = None
        self.outcomes = {"error": 0, "closed": 0}

    def send(self, data: bytes, reset_after: bool = False) -> str:
        if self.sock is None:
            self.sock, self.reader, _ = authenticate(self.address, worker=0)
        try:
            self.sock.sendall(data)
            outcome = closed_or_error(self.sock, self.reader)
        except OSError:
            outcome = "closed"
        self.outcomes[outcome] += 1
        if outcome == "closed" or reset_after:
            self.sock.close()
            self.sock = None
        return outcome


@pytest.fixture(scope="module")
def link(server):
    return Link(server.address)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def check_untouched(server):
    assert server.center().tobytes() == server.initial
    stats = server.stats()
    assert stats["commits_applied"] == 0 and stats["clock"] == 0


# -- generators ----------------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=10),
    st.binary(max_size=24),
)
# shallow on purpose: hypothesis's cost grows with every draw, and deep nesting adds nothing
# the decoder has not already seen at depth one
values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=4), scalars, max_size=2)
INT64 = st.integers(-(2**63), 2**63 - 1)
not_requests = st.sampled_from(["commit", "hello", "challenge", "ok", "error", "nope", "", "PULL"]) | INT64 | st.none() | st.binary(max_size=6)


@st.composite
def wrong_messages(draw):
    """Maps (and non-maps) that are not valid requests."""
    kind = draw(st.sampled_from(["map", "bad_version", "not_a_map", "int_keys", "ext"]))
    extra = draw(st.dictionaries(st.text(max_size=6), values, max_size=3))
    if kind == "map":
        msg = {**extra, "v": 1, "op": draw(not_requests)}
    elif kind == "bad_version":
        msg = {**extra, "v": draw(values.filter(lambda v: v != 1)), "op": draw(st.sampled_from(["pull", "stats", "bye", "commit"]))}
    elif kind == "not_a_map":
        return msgpack.packb(draw(st.one_of(scalars, st.lists(values, max_size=4))), use_bin_type=True)
    elif kind == "int_keys":
        msg = {draw(INT64): 1, "v": 1, "op": draw(st.sampled_from(["pull", "stats"]))}
    else:
        code = draw(st.integers(0, 127))
        data = draw(st.binary(max_size=64))
        msg = {"v": 1, "op": draw(st.sampled_from(["pull", "stats", "commit"])), "x": msgpack.ExtType(code, data)}
        if code == 1 and _is_valid_array_ext(data):  # random bytes that happen to form an array
            msg["op"] = "nope"
    return msgpack.packb(msg, use_bin_type=True)


def _is_valid_array_ext(data: bytes) -> bool:
    from distkeras.ps import protocol as wire

    try:
        wire._ext_hook(1, data)
        return True
    except Exception:
        return False


def ext_array(dtype: str, shape: list, raw: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([dtype, shape, raw], use_bin_type=True))


def arr(a: np.ndarray) -> msgpack.ExtType:
    a = np.ascontiguousarray(a)
    return ext_array(a.dtype.name, list(a.shape), a.tobytes())


wrong_ints = st.one_of(st.integers(-(2**63), -1), st.floats(), st.text(max_size=4), st.binary(max_size=4), st.none(), st.booleans(), st.lists(INT64, max_size=2))
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
positions = st.lists(st.integers(0, SIZE - 1), min_size=1, max_size=6)


@st.composite
def bad_commits(draw):
    """Well-formed commit messages with exactly one defect each (never a valid commit)."""
    base = np.full(SIZE, draw(finite), F32)
    msg = {"v": 1, "op": "commit", "seq": draw(st.integers(0, 2**31)), "samples": draw(st.integers(0, 1000)), "pull": draw(st.booleans())}
    update = {"codec": "none", "values": arr(base)}
    kind = draw(
        st.sampled_from(
            ["length", "large", "dtype", "forbidden_dtype", "nan", "fp16_inf", "field_type", "missing", "codec", "topk", "int8", "shape", "array_bytes"]
        )
    )
    if kind == "length":
        n = draw(st.integers(0, 3 * SIZE).filter(lambda n: n != SIZE))
        update["values"] = arr(np.ones(n, F32))
    elif kind == "large":  # big enough to be decoded in place (framing.decode_frame's scanner)
        update["values"] = arr(np.ones(draw(st.integers(ZERO_COPY_MIN // 4, ZERO_COPY_MIN // 2)), F32))
    elif kind == "dtype":
        dt = draw(st.sampled_from(["float64", "float16", "int32", "int8", "uint8", "int64", "bool"]))
        update["values"] = arr(np.ones(SIZE, dt))
    elif kind == "forbidden_dtype":
        dt = draw(st.sampled_from(["object", "complex64", "complex128", "<U4", "V4", "O", "float128", "datetime64", "|S4", ">f4", "f4"]))
        update["values"] = ext_array(dt, [SIZE], b"\0" * (4 * SIZE))
    elif kind == "nan":
        bad = base.copy()
        bad[draw(positions)] = draw(non_finite)
        update["values"] = arr(bad)
    elif kind == "fp16_inf":
        bad = base.astype(np.float16)
        bad[draw(positions)] = draw(non_finite)
        update = {"codec": "fp16", "values": arr(bad)}
    elif kind == "field_type":
        field = draw(st.sampled_from(["seq", "samples", "pull", "update"]))
        if field == "pull":
            msg["pull"] = draw(st.one_of(INT64, st.text(max_size=3), st.none(), st.floats()))
        elif field == "update":
            update = draw(st.one_of(scalars, st.lists(values, max_size=3)))
        else:
            msg[field] = draw(wrong_ints)
    elif kind == "missing":
        field = draw(st.sampled_from(["seq", "samples", "update", "codec", "values"]))
        if field in ("codec", "values"):
            del update[field]
        elif field == "update":
            update = None
        else:
            del msg[field]
    elif kind == "codec":
        update["codec"] = draw(st.one_of(st.text(max_size=8).filter(lambda s: s not in codecs.CODECS), INT64, st.none(), st.binary(max_size=8)))
    elif kind == "topk":
        defect = draw(st.sampled_from(["range", "negative", "lengths", "index_dtype", "nan"]))
        idx = np.array(sorted(set(draw(positions))), np.int32)
        vals = np.ones(idx.size, F32)
        if defect == "range":
            idx[-1] = draw(st.integers(SIZE, 2**31 - 1))
        elif defect == "negative":
            idx[0] = draw(st.integers(-(2**31), -1))
        elif defect == "lengths":
            vals = np.ones(idx.size + draw(st.integers(1, 5)), F32)
        elif defect == "index_dtype":
            idx = idx.astype(np.int64)
        else:
            vals[0] = draw(non_finite)
        update = {"codec": "topk", "indices": arr(idx), "values": arr(vals)}
    elif kind == "int8":
        defect = draw(st.sampled_from(["chunk", "scales", "q_length", "q_dtype", "scale_nan"]))
        chunk = 8
        q, scales = np.ones(SIZE, np.int8), np.ones(SIZE // chunk, F32)
        if defect == "chunk":
            chunk = draw(st.sampled_from([0, -1, "8", 2.5, None, [8]]))
        elif defect == "scales":
            scales = np.ones(draw(st.integers(0, 20).filter(lambda n: n != SIZE // 8)), F32)
        elif defect == "q_length":
            q = np.ones(draw(st.integers(0, 200).filter(lambda n: n != SIZE)), np.int8)
        elif defect == "q_dtype":
            q = np.ones(SIZE, draw(st.sampled_from(["uint8", "int32", "float32"])))
        else:
            scales[draw(st.integers(0, SIZE // 8 - 1))] = draw(non_finite)
        update = {"codec": "int8", "q": arr(q), "scales": arr(scales), "chunk": chunk}
    elif kind == "shape":
        shape = draw(st.sampled_from([[SIZE, 1], [1, SIZE], [8, 8], [], [SIZE // 2, 2]]))
        update["values"] = ext_array("float32", shape, base.tobytes()[: 4 * int(np.prod(shape))] if shape else base.tobytes()[:4])
    else:  # array whose byte count does not match dtype and shape
        n = draw(st.integers(0, 8 * SIZE).filter(lambda n: n != 4 * SIZE))
        update["values"] = ext_array("float32", [SIZE], b"\x00" * n)
    if update is not None:
        msg["update"] = update
    return msgpack.packb(msg, use_bin_type=True)


# -- tests: 11,000 cases, drawn in batches of BATCH per hypothesis example (hypothesis's
# own cost is per example; every case is still sent and checked on its own) ------------------
BATCH = 5
CASES = {"count": 0}


def batch(strategy):
    return st.lists(strategy, min_size=BATCH, max_size=BATCH)


@settings(FUZZ, max_examples=2500 // BATCH)
@given(bodies=batch(st.binary(max_size=300)))
def test_garbage_bodies(server, link, bodies):
    for body in bodies:
        assert link.send(frame(body)) in ("error", "closed")
        CASES["count"] += 1
    check_untouched(server)


@settings(FUZZ, max_examples=2500 // BATCH)
@given(bodies=batch(wrong_messages()))
def test_wrong_messages(server, link, bodies):
    for body in bodies:
        assert link.send(frame(body)) in ("error", "closed")
        CASES["count"] += 1
    check_untouched(server)


@settings(FUZZ, max_examples=3500 // BATCH)
@given(bodies=batch(bad_commits()))
def test_commits_with_one_defect(server, link, bodies):
    for body in bodies:
        assert link.send(frame(body)) == "error"
        CASES["count"] += 1
    check_untouched(server)


@st.composite
def damaged_large_commits(draw):
    """A large commit (decoded in place) with a few bytes overwritten anywhere."""
    n = draw(st.integers(ZERO_COPY_MIN // 4, ZERO_COPY_MIN // 4 + 100))
    body = bytearray(
        msgpack.packb({"v": 1, "op": "commit", "seq": draw(st.integers(0, 1000)), "samples": 1, "pull": True, "update": {"codec": "none", "values": arr(np.ones(n, F32))}}, use_bin_type=True)
    )
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, 120)) if draw(st.booleans()) else draw(st.integers(0, len(body) - 1))
        body[min(where, len(body) - 1)] = draw(st.integers(0, 255))
    return bytes(body)


@settings(FUZZ, max_examples=500 // BATCH)
@given(bodies=batch(damaged_large_commits()))
def test_damaged_large_commits(server, link, bodies):
    for body in bodies:
        assert link.send(frame(body)) in ("error", "closed")
        CASES["count"] += 1
    check_untouched(server)


bad_frames = st.tuples(
    st.sampled_from(["truncated", "huge", "zero", "prefix_only"]),
    st.binary(min_size=1, max_size=200),
    st.integers(0, 199),
    st.integers(64 * 1024 + 1, 2**32 - 1),
)


@settings(FUZZ, max_examples=1000 // BATCH)
@given(cases=batch(bad_frames))
def test_bad_frames(server, cases):
    for case, body, cut, huge in cases:
        sock, reader, _ = authenticate(server.address, worker=1)
        with sock:
            if case == "truncated":  # part of a frame, then the client goes away (shuts its side)
                data = frame(body)
                sock.sendall(data[: min(cut, len(data) - 1)])
                sock.shutdown(socket.SHUT_WR)
                assert closed_or_error(sock, reader) in ("closed", "error")
            elif case == "huge":  # over the limit: refused before anything is allocated
                sock.sendall(struct.pack(">I", huge) + body)
                assert closed_or_error(sock, reader) == "error"
                sock.shutdown(socket.SHUT_WR)
                assert closed_or_error(sock, reader) == "closed"
            elif case == "zero":
                sock.sendall(struct.pack(">I", 0))
                assert closed_or_error(sock, reader) == "error"
            else:
                sock.sendall(struct.pack(">I", len(body) + 1)[: 1 + cut % 3])
                sock.shutdown(socket.SHUT_WR)
                assert closed_or_error(sock, reader) == "closed"
        CASES["count"] += 1
    check_untouched(server)


@settings(FUZZ, max_examples=1000 // BATCH)
@given(datas=batch(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(frame), wrong_messages().map(frame), bad_commits().map(frame))))
def test_garbage_before_authentication(server, datas):
    for data in datas:
        sock, reader, _ = raw_connect(server.address)
        with sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            assert closed_or_error(sock, reader) in ("closed", "error")
            assert closed_or_error(sock, reader) == "closed"  # never a session without the secret
        CASES["count"] += 1
    check_untouched(server)


def test_server_is_intact_after_the_fuzzing(server, link):
    check_untouched(server)
    if CASES["count"]:  # the fuzz tests above ran in this session
        assert CASES["count"] >= 10_000
        s = server.stats()
        assert s["service"]["counters"].get("error_bad_request", 0) > 5000
        assert s["rejected"].get("non_finite", 0) > 100
    c = PSClient(*server.address, SECRET, 1, retry_timeout=5)
    center, info = c.commit(np.ones(SIZE, F32))
    assert info["status"] == "applied"
    np.testing.assert_array_equal(center, np.frombuffer(server.initial, F32) + 1)
