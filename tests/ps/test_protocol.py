import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from distkeras.ps import protocol as wire
from distkeras.ps.protocol import WireError

ALLOWED = sorted(wire.ALLOWED_DTYPES)


def arrays():
    return st.sampled_from(ALLOWED).flatmap(
        lambda dt: hnp.arrays(
            np.dtype(dt),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
            elements=hnp.from_dtype(np.dtype(dt), allow_nan=True) if np.dtype(dt).kind == "f" else None,
        )
    )


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(
    scalars | arrays(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
fields = st.dictionaries(st.text(max_size=6).filter(lambda k: k not in ("v", "op")), values, max_size=4)


def same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(wire.OPS)), fields)
def test_round_trip_is_exact(op, msg_fields):
    body = wire.encode(op, **msg_fields)
    msg = wire.decode(body)
    assert msg["v"] == wire.SCHEMA_VERSION and msg["op"] == op
    for k, v in msg_fields.items():
        assert same(v, msg[k]), k


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_wire_error(data):
    try:
        wire.decode(data)
    except WireError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 255))
def test_random_array_extensions_raise_only_wire_error(raw, code):
    body = msgpack.packb({"v": 1, "op": "commit", "a": msgpack.ExtType(code % 4, raw)}, use_bin_type=True)
    try:
        wire.decode(body)
    except WireError:
        pass


@pytest.mark.parametrize("a", [
    np.array(1.5, np.float32),  # 0-d stays 0-d
    np.zeros((0, 3), np.float16),  # empty with a shape
    np.array([True, False]),
    np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian comes back native, same values
    np.arange(12, dtype=np.float32).reshape(3, 4).T,  # non-contiguous
    np.array([np.nan, np.inf, -0.0], np.float64),
])
def test_array_edge_cases(a):
    b = wire.decode(wire.encode("ok", a=a))["a"]
    assert b.shape == a.shape and b.dtype == a.dtype.newbyteorder("=")
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def test_disallowed_dtypes_are_refused_both_ways():
    for bad in (np.zeros(2, np.complex64), np.array(["x"]), np.array([object()], dtype=object), np.zeros(2, np.uint16)):
        with pytest.raises(WireError, match="not allowed"):
            wire.encode("commit", a=bad)
    forged = msgpack.ExtType(1, msgpack.packb(["object", [1], b"\0" * 8], use_bin_type=True))
    with pytest.raises(WireError, match="'object' is not allowed"):
        wire.decode(msgpack.packb({"v": 1, "op": "ok", "a": forged}, use_bin_type=True))


@pytest.mark.parametrize("payload, match", [
    (["float32", [3], b"\0" * 8], "needs 12 bytes, got 8"),
    (["float32", [-1], b""], "non-negative"),
    (["float32", [True], b"\0" * 4], "non-negative"),
    (["float32", [0] * 40, b""], "non-negative"),
    (["float32", [2], "text"], "bytes"),
    (["float32", [0, 2**63], b""], "malformed"),
    ([1, 2], "malformed array"),
    (7, "malformed array"),
])
def test_malformed_arrays(payload, match):
    body = msgpack.packb({"v": 1, "op": "ok", "a": msgpack.ExtType(1, msgpack.packb(payload, use_bin_type=True))}, use_bin_type=True)
    with pytest.raises(WireError, match=match):
        wire.decode(body)


@pytest.mark.parametrize("msg, match", [
    ([1, 2], "must be a map"),
    ({"v": 2, "op": "ok"}, "schema version 2"),
    ({"v": True, "op": "ok"}, "schema version True"),
    ({"v": 1.0, "op": "ok"}, "schema version 1.0"),
    ({"op": "ok"}, "schema version None"),
    ({"v": 1, "op": "launch"}, "unknown op 'launch'"),
    ({"v": 1, "op": [1]}, "unknown op"),  # unhashable: must not escape as TypeError
    ({"v": 1, "op": {"a": 1}}, "unknown op"),
    ({1: 2, "v": 1, "op": "ok"}, "malformed"),  # non-string map key
])
def test_bad_messages(msg, match):
    with pytest.raises(WireError, match=match):
        wire.decode(msgpack.packb(msg, use_bin_type=True))


def test_unknown_ext_type_and_size_limit():
    with pytest.raises(WireError, match="extension type 5"):
        wire.decode(msgpack.packb({"v": 1, "op": "ok", "x": msgpack.ExtType(5, b"")}))
    body = wire.encode("commit", a=np.zeros(100, np.float32))
    with pytest.raises(WireError, match="exceeds the limit of 100"):
        wire.decode(body, max_size=100)


def test_encode_errors():
    with pytest.raises(WireError, match="unknown op 'nope'"):
        wire.encode("nope")
    with pytest.raises(WireError, match="unknown op"):
        wire.encode(["ok"])
    with pytest.raises(WireError, match="reserved"):
        wire.encode("ok", v=2)
    with pytest.raises(WireError, match="cannot encode a set"):
        wire.encode("ok", x={1})
    with pytest.raises(WireError, match="cannot encode"):
        wire.encode("ok", x=2**70)


def test_numpy_scalars_become_plain_values():
    msg = wire.decode(wire.encode("stats", a=np.int64(3), b=np.float32(0.5), c=np.bool_(True)))
    assert (msg["a"], msg["b"], msg["c"]) == (3, 0.5, True)


def test_frames():
    body = wire.encode("pull", worker=3)
    framed = wire.frame(body)
    assert wire.frame_length(framed[:4]) == len(body) and framed[4:] == body
    with pytest.raises(WireError, match="truncated"):
        wire.frame_length(b"\0\0")
    with pytest.raises(WireError, match="exceeds"):
        wire.frame_length(wire.HEADER.pack(2**31), max_size=2**30)


def test_require():
    msg = {"op": "commit", "seq": 3, "flag": True, "name": "x"}
    assert wire.require(msg, "seq", int, minimum=0) == 3
    with pytest.raises(WireError, match="lacks field 'worker'"):
        wire.require(msg, "worker", int)
    with pytest.raises(WireError, match="got bool"):
        wire.require(msg, "flag", int)
    with pytest.raises(WireError, match="must be int, got str"):
        wire.require(msg, "name", int)
    with pytest.raises(WireError, match=">= 5"):
        wire.require(msg, "seq", int, minimum=5)


def test_hmac_challenge():
    secret, challenge = wire.new_secret(), wire.new_challenge()
    assert len(secret) == 32 and len(challenge) == 32 and secret != wire.new_secret()
    answer = wire.auth_response(secret, challenge)
    assert wire.verify_response(secret, challenge, answer)
    assert not wire.verify_response(secret, challenge, wire.auth_response(wire.new_secret(), challenge))
    assert not wire.verify_response(secret, wire.new_challenge(), answer)
    assert not wire.verify_response(secret, challenge, "not bytes")
    with pytest.raises(ValueError):
        wire.auth_response(b"", challenge)


def test_no_pickle_on_the_wire():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(wire))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve"}
    assert "allow_pickle" not in inspect.getsource(wire)
