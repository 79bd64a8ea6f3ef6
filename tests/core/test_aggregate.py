"""The maths of the strategies, with hand-computed values (all exactly representable in float32)."""

import numpy as np
import pytest

from distkeras.core.strategies import aggregate as agg


def f32(*xs):
    return np.array(xs, dtype=np.float32)


def test_delta_scale_add():
    # w − c = [1.5 − 1, −2 − (−1), 0.25 − 0] = [0.5, −1, 0.25]
    assert agg.delta(f32(1.5, -2.0, 0.25), f32(1.0, -1.0, 0.0)).tolist() == [0.5, -1.0, 0.25]
    # 0.25 · [4, −8] = [1, −2]
    assert agg.scale(f32(4.0, -8.0), 0.25).tolist() == [1.0, -2.0]
    # [10, 20] + [0.5, −1] = [10.5, 19]
    assert agg.add(f32(10.0, 20.0), f32(0.5, -1.0)).tolist() == [10.5, 19.0]


def test_add_scaled_is_dynsgd_rule():
    # c + Δ/(τ+1) with τ = 3: [1, 1] + [4, −2]/4 = [2, 0.5]
    assert agg.add_scaled(f32(1.0, 1.0), f32(4.0, -2.0), 1.0 / 4).tolist() == [2.0, 0.5]
    # factor 1 is exactly add
    c, u = f32(0.1, 0.2), f32(0.3, 0.4)
    assert np.array_equal(agg.add_scaled(c, u, 1.0), agg.add(c, u))


def test_elastic_difference():
    # α (w − c) with α = 0.5: 0.5 · ([2, 0] − [1, 1]) = [0.5, −0.5]
    assert agg.elastic_difference(f32(2.0, 0.0), f32(1.0, 1.0), 0.5).tolist() == [0.5, -0.5]


def test_weighted_mean():
    # (1·[1, 2] + 3·[4, 8]) / 4 = [13/4, 26/4] = [3.25, 6.5]
    m = agg.weighted_mean([f32(1.0, 2.0), f32(4.0, 8.0)], [1, 3])
    assert m.dtype == np.float32 and m.tolist() == [3.25, 6.5]
    # unweighted: ([1, 2] + [4, 8]) / 2 = [2.5, 5]
    assert agg.weighted_mean([f32(1.0, 2.0), f32(4.0, 8.0)]).tolist() == [2.5, 5.0]
    # a single vector comes back bit for bit (LocalSGD with one worker is plain SGD)
    v = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    assert np.array_equal(agg.weighted_mean([v]), v)
    with pytest.raises(ValueError, match="no vectors"):
        agg.weighted_mean([])
    with pytest.raises(ValueError, match="non-negative"):
        agg.weighted_mean([f32(1.0)], [-1])
    with pytest.raises(ValueError, match="2 weights for 1 vectors"):
        agg.weighted_mean([f32(1.0)], [1, 2])


def test_distance_scaled():
    # c = [2, 1], c_pulled = [1, 1], u = [1, 1], η = 0.5:
    # drift² / η + 1 = [1/0.5 + 1, 0 + 1] = [3, 1]  →  c + u / [3, 1] = [2 + 1/3, 2]
    r = agg.distance_scaled(f32(2.0, 1.0), f32(1.0, 1.0), f32(1.0, 1.0), 0.5)
    assert r.tolist() == [np.float32(2.0) + np.float32(1.0) / np.float32(3.0), 2.0]


def test_nesterov_outer_step():
    # c = [1, 1], g = [1, −1], b = [0, 0], η = 0.5, μ = 0.5
    # b' = μb + g = [1, −1];  c' = c − η (g + μ b') = [1, 1] − 0.5 · [1.5, −1.5] = [0.25, 1.75]
    c, b = agg.nesterov_outer_step(f32(1.0, 1.0), f32(1.0, -1.0), f32(0.0, 0.0), 0.5, 0.5)
    assert c.tolist() == [0.25, 1.75] and b.tolist() == [1.0, -1.0]
    # again with the same g: b'' = 0.5 · [1, −1] + [1, −1] = [1.5, −1.5]
    # c'' = [0.25, 1.75] − 0.5 · ([1, −1] + 0.5 · [1.5, −1.5]) = [−0.625, 2.625]
    c, b = agg.nesterov_outer_step(c, f32(1.0, -1.0), b, 0.5, 0.5)
    assert c.tolist() == [-0.625, 2.625] and b.tolist() == [1.5, -1.5]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 16383, 16384, 16385, 65537])
def test_all_finite_is_exact(n):
    rng = np.random.default_rng(n)
    positions = {0, n - 1, n // 2, max(0, n // 2 - 1), *rng.integers(0, n, 5).tolist()}
    for base in (np.full(n, 0.5, np.float32), np.zeros(n, np.float32), np.full(n, 3e38, np.float32)):
        assert agg.all_finite(base)  # 3e38 · 3e38 and Σ overflow: the exact check still says finite
        for p in positions:
            for bad in (np.nan, np.inf, -np.inf):
                v = base.copy()
                v[p] = bad
                assert not agg.all_finite(v), (n, p, bad)


def test_all_finite_other_dtypes():
    assert agg.all_finite(np.zeros(0, np.float32))
    assert agg.all_finite(np.arange(10))
    assert not agg.all_finite(np.array([1.0, np.nan], dtype=np.float16))
    assert not agg.all_finite(np.full(20000, np.inf, dtype=np.float64))


def test_out_may_alias_an_input():
    c = f32(2.0, 1.0)
    r = agg.distance_scaled(c, f32(1.0, 1.0), f32(1.0, 1.0), 0.5, out=c)
    assert r is c and c[1] == 2.0
    c = f32(1.0, 1.0)
    agg.add_scaled(c, f32(4.0, -2.0), 0.25, out=c)
    assert c.tolist() == [2.0, 0.5]


def test_pure_functions_do_not_mutate():
    rng = np.random.default_rng(1)
    vs = [rng.standard_normal(17).astype(np.float32) for _ in range(3)]
    before = [v.copy() for v in vs]
    agg.delta(vs[0], vs[1])
    agg.scale(vs[0], 3.0)
    agg.add(vs[0], vs[1])
    agg.add_scaled(vs[0], vs[1], 0.3)
    agg.elastic_difference(vs[0], vs[1], 0.2)
    agg.weighted_mean(vs, [1, 2, 3])
    agg.distance_scaled(vs[0], vs[1], vs[2], 0.1)
    agg.nesterov_outer_step(vs[0], vs[1], vs[2], 0.7, 0.9)
    agg.all_finite(vs[0])
    for a, b in zip(vs, before):
        assert np.array_equal(a, b)


def test_all_finite_long_odd_vector():
    n = (1 << 20) + 3
    v = np.full(n, 0.25, np.float32)
    assert agg.all_finite(v)
    for p in (0, n // 2 - 1, n // 2, n - 2, n - 1):
        for bad in (np.nan, np.inf, -np.inf):
            v[p] = bad
            assert not agg.all_finite(v), (p, bad)
            v[p] = 0.25
