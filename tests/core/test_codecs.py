import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from distkeras.core.codecs import CodecError, Float16Codec, Int8Codec, NoCodec, TopKCodec, encoded_nbytes, get_codec

VECTORS = hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(-1e3, 1e3, width=32))


def test_get_codec_by_spec():
    assert isinstance(get_codec(None), NoCodec) and isinstance(get_codec("none"), NoCodec)
    assert isinstance(get_codec("FP16"), Float16Codec)
    assert get_codec("int8:256").chunk == 256
    t = get_codec("topk:0.05")
    assert isinstance(t, TopKCodec) and t.fraction == 0.05 and t.spec() == "topk:0.05"
    assert get_codec("topk").fraction == 0.01
    c = Int8Codec()
    assert get_codec(c) is c


@pytest.mark.parametrize("spec, match", [
    ("zip", "unknown codec 'zip'; known codecs: none, fp16, int8, topk"),
    ("topk:0", "fraction"),
    ("topk:1.5", "fraction"),
    ("topk:abc", "bad codec argument"),
    ("int8:0", "chunk"),
    ("fp16:3", "takes no argument"),
])
def test_bad_codec_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        get_codec(spec)


def test_sizes_reported():
    n = 10_000
    v = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    sizes = {}
    for spec in ("none", "fp16", "int8", "topk:0.01"):
        codec = get_codec(spec)
        enc, _ = codec.encode(v, codec.init_state(n))
        sizes[spec] = encoded_nbytes(enc)
    assert sizes["none"] == 4 * n
    assert sizes["fp16"] == 2 * n
    assert sizes["int8"] == n + 4 * math.ceil(n / 1024)  # one int8 per value + one float32 scale per chunk
    assert sizes["topk:0.01"] == 8 * 100  # k = ⌈0.01 · n⌉ (int32 index + float32 value)


def test_none_and_fp16_round_trip():
    v = np.array([0.5, -2.0, 1e-3, 3.0], dtype=np.float32)
    for codec in (NoCodec(), Float16Codec()):
        enc, _ = codec.encode(v, codec.init_state(4))
        out = codec.decode(enc, 4)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, v, rtol=1e-3)
    enc, _ = NoCodec().encode(v, None)
    assert np.array_equal(NoCodec().decode(enc, 4), v)


def test_fp16_overflow_becomes_inf_and_is_caught_downstream():
    enc, _ = Float16Codec().encode(np.array([1e6], np.float32), None)
    assert np.isinf(Float16Codec().decode(enc, 1)[0])


@settings(max_examples=25, deadline=None)
@given(VECTORS, st.integers(1, 64))
def test_int8_error_bound(v, chunk):
    codec = Int8Codec(chunk=chunk)
    enc, _ = codec.encode(v, codec.init_state(v.size))
    out = codec.decode(enc, v.size)
    assert out.dtype == np.float32 and out.shape == v.shape
    # per chunk: |v − q·s| <= s/2 with s = max|v| / 127 (plus float32 rounding)
    scales = np.repeat(enc["scales"], chunk)[: v.size]
    assert np.all(np.abs(out - v) <= scales * 0.5 * (1 + 1e-5) + 1e-30)


def test_int8_zero_vector_and_empty():
    codec = Int8Codec(chunk=4)
    enc, _ = codec.encode(np.zeros(6, np.float32), None)
    assert codec.decode(enc, 6).tolist() == [0.0] * 6
    enc, _ = codec.encode(np.zeros(0, np.float32), None)
    assert codec.decode(enc, 0).shape == (0,)


def test_topk_picks_the_largest_magnitudes():
    codec = TopKCodec(fraction=0.4, error_feedback=False)  # k = ⌈0.4 · 5⌉ = 2
    v = np.array([0.1, -5.0, 0.3, 4.0, -0.2], np.float32)
    enc, _ = codec.encode(v, codec.init_state(5))
    assert enc["indices"].tolist() == [1, 3] and enc["values"].tolist() == [-5.0, 4.0]
    assert codec.decode(enc, 5).tolist() == [0.0, -5.0, 0.0, 4.0, 0.0]


def test_topk_error_feedback_by_hand():
    codec = TopKCodec(fraction=0.5)  # k = 1 of 2
    state = codec.init_state(2)
    enc, state = codec.encode(np.array([3.0, 1.0], np.float32), state)
    assert codec.decode(enc, 2).tolist() == [3.0, 0.0] and state.residual.tolist() == [0.0, 1.0]
    # u' = [0.5, 1] + [0, 1] = [0.5, 2]: send index 1 (2.0), keep 0.5
    enc, state = codec.encode(np.array([0.5, 1.0], np.float32), state)
    assert codec.decode(enc, 2).tolist() == [0.0, 2.0] and state.residual.tolist() == [0.5, 0.0]


@settings(max_examples=25, deadline=None)
@given(st.lists(VECTORS.filter(lambda a: a.size == 50), min_size=1, max_size=6) | st.just([]), st.floats(0.01, 1.0))
def test_topk_error_feedback_conserves_mass(vectors, fraction):
    codec = TopKCodec(fraction=fraction)
    state = codec.init_state(50)
    sent_total = np.zeros(50, np.float64)
    for v in vectors:
        old = state.residual.copy()
        enc, state = codec.encode(v, state)
        sent = codec.decode(enc, 50)
        # elementwise and exact: what is sent plus what stays = input plus what stayed before
        assert np.array_equal(sent + state.residual, v + old)
        sent_total += sent
    inputs = np.sum([v.astype(np.float64) for v in vectors], axis=0) if vectors else np.zeros(50)
    # sum of sent + residual == sum of inputs
    np.testing.assert_allclose(sent_total.sum() + state.residual.astype(np.float64).sum(), inputs.sum(), rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(sent_total + state.residual, inputs, rtol=1e-5, atol=1e-3)


def test_topk_state_is_not_mutated():
    codec = TopKCodec(fraction=0.5)
    state = codec.init_state(4)
    v = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    _, s1 = codec.encode(v, state)
    assert state.residual.tolist() == [0.0] * 4 and v.tolist() == [1.0, 2.0, 3.0, 4.0]
    _, s2 = codec.encode(v, state)
    assert np.array_equal(s1.residual, s2.residual)  # pure: same inputs, same outputs


@pytest.mark.parametrize("codec, encoded, size, match", [
    (NoCodec(), {"codec": "fp16", "values": np.zeros(2, np.float16)}, 2, "expected an update encoded with 'none'"),
    (NoCodec(), {"codec": "none", "values": np.zeros(3, np.float32)}, 2, "length 3, expected 2"),
    (NoCodec(), {"codec": "none", "values": np.zeros(2, np.float64)}, 2, "float32"),
    (Int8Codec(), {"codec": "int8", "q": np.zeros(2, np.int8), "scales": np.ones(1, np.float32)}, 2, "chunk"),
    (TopKCodec(), {"codec": "topk", "indices": np.array([5], np.int32), "values": np.ones(1, np.float32)}, 2, r"\[0, 2\)"),
    (TopKCodec(), {"codec": "topk", "indices": np.array([-1], np.int32), "values": np.ones(1, np.float32)}, 2, r"\[0, 2\)"),
    (TopKCodec(), {"codec": "topk", "indices": np.array([0, 1], np.int32), "values": np.ones(1, np.float32)}, 2, "length"),
    (TopKCodec(), "not a dict", 2, "expected an update"),
])
def test_decode_errors(codec, encoded, size, match):
    with pytest.raises(CodecError, match=match):
        codec.decode(encoded, size)


@pytest.mark.parametrize("spec", ["none", "fp16", "int8:4", "topk:0.1"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_codecs_never_launder_non_finite_values(spec, bad):
    """A NaN/Inf in the input must reach the server as a non-finite value, which it rejects."""
    import warnings

    codec = get_codec(spec)
    v = np.linspace(-1, 1, 20).astype(np.float32)
    v[7] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc, _ = codec.encode(v, codec.init_state(20))
        assert not np.all(np.isfinite(codec.decode(enc, 20)))
