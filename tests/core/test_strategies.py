"""Every rule with hand-computed values (worker and server side), equivalences and contracts."""

import numpy as np
import pytest

from distkeras.core.strategies import (
    STRATEGIES,
    CenterState,
    Commit,
    MomentumState,
    UnknownStrategyError,
    get_strategy,
    strategy_defaults,
)


def f32(*xs):
    return np.array(xs, dtype=np.float32)


EXCHANGING = [name for name, cls in STRATEGIES.items() if cls.exchanges]
ASYNC = [name for name in EXCHANGING if not STRATEGIES[name].synchronous]
SYNC = [name for name in EXCHANGING if STRATEGIES[name].synchronous]


# -- worker side + server side, by hand --------------------------------------------------
def test_downpour():
    s = get_strategy("downpour")
    assert (s.window, s.synchronous, s.replace_after_pull) == (5, False, True)
    local, pulled = f32(1.5, -2.0, 0.25), f32(1.0, -1.0, 0.0)
    _, new_local, payload = s.commit(s.init_worker(pulled), local, pulled)
    assert payload.tolist() == [0.5, -1.0, 0.25]  # Δ = w − c_pulled
    assert new_local.tolist() == [1.5, -2.0, 0.25]  # the worker's weights are not moved
    state = s.apply(s.init_server(f32(10.0, 20.0, 30.0)), [Commit(payload)])
    assert state.center.tolist() == [10.5, 19.0, 30.25]  # c + Δ
    _, after = s.after_pull(None, new_local, state.center)
    assert after.tolist() == state.center.tolist() and after is not state.center  # replaced by a copy


def test_adag():
    s = get_strategy("adag", window=4)
    local, pulled = f32(1.5, -2.0, 0.25), f32(1.0, -1.0, 0.0)
    _, _, payload = s.commit(None, local, pulled)
    assert payload.tolist() == [0.125, -0.25, 0.0625]  # Δ/λ = [0.5, −1, 0.25] / 4
    state = s.apply(s.init_server(f32(1.0, 1.0, 1.0)), [Commit(payload, staleness=5)])
    assert state.center.tolist() == [1.125, 0.75, 1.0625]  # c + Δ/λ (staleness ignored)
    assert get_strategy("adag").window == 12


def test_dynsgd():
    s = get_strategy("dynsgd")
    _, _, payload = s.commit(None, f32(5.0, -1.0), f32(1.0, 1.0))
    assert payload.tolist() == [4.0, -2.0]  # Δ
    state = s.apply(s.init_server(f32(1.0, 1.0)), [Commit(payload, staleness=3)])
    assert state.center.tolist() == [2.0, 0.5]  # c + Δ/(τ+1) = [1, 1] + [4, −2]/4
    state = s.apply(s.init_server(f32(1.0, 1.0)), [Commit(payload, staleness=0)])
    assert state.center.tolist() == [5.0, -1.0]  # fresh commit: full Δ


@pytest.mark.parametrize("name", ["aeasgd", "eamsgd"])
def test_async_elastic(name):
    s = get_strategy(name)  # ρ = 5, η = 0.1: α = 0.5
    assert s.alpha == 0.5 and s.window == 32 and not s.replace_after_pull
    local, pulled = f32(2.0, 0.0), f32(1.0, 1.0)
    _, new_local, e = s.commit(None, local, pulled)
    assert e.tolist() == [0.5, -0.5]  # e = α (w − c_pulled) = 0.5 · [1, −1]
    assert new_local.tolist() == [1.5, 0.5]  # w − e
    state = s.apply(s.init_server(pulled), [Commit(e)])
    assert state.center.tolist() == [1.5, 0.5]  # c + e
    _, kept = s.after_pull(None, new_local, state.center)
    assert kept is new_local  # the EASGD family keeps its own weights
    assert s.worker_momentum == (0.9 if name == "eamsgd" else None)


def test_easgd_synchronous_round():
    assert get_strategy("easgd").synchronous and get_strategy("easgd").alpha == pytest.approx(0.05)  # ρ 5, η 0.01
    s = get_strategy("easgd", rho=5.0, learning_rate=0.05)  # α = 0.25, exact in float32
    c = f32(1.0, 1.0)
    _, w1, e1 = s.commit(None, f32(2.0, 0.0), c)
    _, w2, e2 = s.commit(None, f32(0.0, 3.0), c)
    assert e1.tolist() == [0.25, -0.25]  # α (w1 − c) = 0.25 · [1, −1]
    assert e2.tolist() == [-0.25, 0.5]  # α (w2 − c) = 0.25 · [−1, 2]
    assert w1.tolist() == [1.75, 0.25] and w2.tolist() == [0.25, 2.5]  # w_k − e_k
    state = s.apply(s.init_server(c), [Commit(e1), Commit(e2)])
    assert state.center.tolist() == [1.0, 1.25]  # c + e1 + e2 = [1 + 0.25 − 0.25, 1 − 0.25 + 0.5]


def test_experimental_distance_scaled():
    s = get_strategy("experimental", window=2, learning_rate=0.5)
    _, _, payload = s.commit(None, f32(3.0, 1.0), f32(1.0, 1.0))
    assert payload.tolist() == [1.0, 0.0]  # Δ/λ = [2, 0] / 2
    # c = [2, 1], c_pulled = [1, 1]: damping 1/((c − c_p)²/η + 1) = [1/3, 1]
    state = s.apply(CenterState(f32(2.0, 1.0)), [Commit(f32(1.0, 1.0), center_at_pull=f32(1.0, 1.0))])
    assert state.center.tolist() == [np.float32(2.0) + np.float32(1.0) / np.float32(3.0), 2.0]
    with pytest.raises(ValueError, match="center_at_pull"):
        s.apply(CenterState(f32(2.0, 1.0)), [Commit(f32(1.0, 1.0))])


def test_model_averaging_is_sample_weighted():
    s = get_strategy("averaging")
    assert s.window is None and s.synchronous and s.sends_weights
    _, _, p = s.commit(None, f32(1.0, 2.0), f32(0.0, 0.0))
    assert p.tolist() == [1.0, 2.0]
    state = s.apply(s.init_server(f32(9.0, 9.0)), [Commit(f32(1.0, 2.0), samples=1), Commit(f32(4.0, 8.0), samples=3)])
    assert state.center.tolist() == [3.25, 6.5]  # (1·[1, 2] + 3·[4, 8]) / 4


def test_localsgd_is_plain_mean():
    s = get_strategy("localsgd")
    assert s.window == 8 and s.synchronous
    state = s.apply(s.init_server(f32(9.0, 9.0)), [Commit(f32(1.0, 2.0), samples=1), Commit(f32(4.0, 8.0), samples=3)])
    assert state.center.tolist() == [2.5, 5.0]  # ([1, 2] + [4, 8]) / 2


def test_diloco_outer_nesterov():
    s = get_strategy("diloco", outer_learning_rate=0.5, outer_momentum=0.5)
    c = f32(1.0, 1.0)
    _, _, g1 = s.commit(None, f32(0.0, 1.0), c)
    _, _, g2 = s.commit(None, f32(0.0, 3.0), c)
    assert g1.tolist() == [1.0, 0.0] and g2.tolist() == [1.0, -2.0]  # g_k = c − w_k
    state = s.init_server(c)
    assert isinstance(state, MomentumState) and state.momentum.tolist() == [0.0, 0.0]
    # g = mean = [1, −1]; b = [1, −1]; c = [1, 1] − 0.5 · ([1, −1] + 0.5 · [1, −1]) = [0.25, 1.75]
    state = s.apply(state, [Commit(g1), Commit(g2)])
    assert state.center.tolist() == [0.25, 1.75] and state.momentum.tolist() == [1.0, -1.0]
    defaults = get_strategy("diloco")
    assert (defaults.window, defaults.outer_learning_rate, defaults.outer_momentum) == (16, 0.7, 0.9)


def test_independent_strategies_have_no_exchange():
    for name in ("single", "ensemble"):
        s = get_strategy(name)
        assert not s.exchanges
        with pytest.raises(NotImplementedError):
            s.commit(None, f32(1.0), f32(1.0))


# -- equivalences ------------------------------------------------------------------------------
def test_adag_window_1_equals_downpour_window_1_over_a_sequence():
    rng = np.random.default_rng(0)
    adag, downpour = get_strategy("adag", window=1), get_strategy("downpour", window=1)
    c0 = rng.standard_normal(33).astype(np.float32)
    sa, sd = adag.init_server(c0), downpour.init_server(c0)
    for step in range(20):
        pulled = rng.standard_normal(33).astype(np.float32)
        local = pulled + rng.standard_normal(33).astype(np.float32) * 0.1
        _, la, pa = adag.commit(None, local, pulled)
        _, ld, pd = downpour.commit(None, local, pulled)
        assert np.array_equal(pa, pd) and np.array_equal(la, ld)
        sa = adag.apply(sa, [Commit(pa, staleness=step % 4)])
        sd = downpour.apply(sd, [Commit(pd, staleness=step % 4)])
        assert np.array_equal(sa.center, sd.center)


def test_diloco_with_outer_lr_1_and_no_momentum_is_localsgd():
    rng = np.random.default_rng(1)
    diloco = get_strategy("diloco", outer_learning_rate=1.0, outer_momentum=0.0)
    local = get_strategy("localsgd")
    c = rng.standard_normal(50).astype(np.float32)
    sd, sl = diloco.init_server(c), local.init_server(c)
    for _ in range(5):
        workers = [sd.center + rng.standard_normal(50).astype(np.float32) * 0.01 for _ in range(4)]
        sd = diloco.apply(sd, [Commit(diloco.commit(None, w, sd.center)[2]) for w in workers])
        sl = local.apply(sl, [Commit(local.commit(None, w, sl.center)[2]) for w in workers])
        # c − mean(c − w_k) == mean(w_k) up to float32 rounding
        np.testing.assert_allclose(sd.center, sl.center, rtol=0, atol=1e-6)
        sl = CenterState(sd.center.copy())  # continue from the same point


def test_synchronous_easgd_one_worker_matches_its_equations():
    """Zhang et al. (eq. 5–6) with p = 1, on f(x) = ½‖x − a‖² (∇f = x − a), exchange every λ steps:
    x ← x − η∇f(x) each step; every λ steps: x ← x − α(x − c), c ← c + α(x − c) (same x − c)."""
    from distkeras.core.server import ParameterServerState

    s = get_strategy("easgd", window=3, rho=2.0, learning_rate=0.1)  # α = 0.2
    eta, alpha = 0.05, 0.2
    rng = np.random.default_rng(2)
    a = rng.standard_normal(8)
    x0 = rng.standard_normal(8).astype(np.float32)
    # strategy + parameter server, float32
    server = ParameterServerState(s, x0, num_workers=1)
    local, pulled = x0.copy(), server.pull(0).center
    # reference in float64
    x, c = x0.astype(np.float64), x0.astype(np.float64)
    for rnd in range(10):
        for _ in range(s.window):
            local = (local - np.float32(eta) * (local - a.astype(np.float32))).astype(np.float32)
            x = x - eta * (x - a)
        _, local, payload = s.commit(None, local, pulled)
        assert server.commit(0, 0, rnd, payload).status == "applied"
        _, local = s.after_pull(None, local, server.center)
        pulled = server.pull(0).center
        diff = x - c
        x, c = x - alpha * diff, c + alpha * diff
        np.testing.assert_allclose(local, x, atol=1e-5)
        np.testing.assert_allclose(pulled, c, atol=1e-5)


# -- contracts for every strategy --------------------------------------------------------------------
def _commits(name, rng, size, k=3):
    cls = STRATEGIES[name]
    n = k if cls.synchronous else 1
    return [
        Commit(
            rng.standard_normal(size).astype(np.float32),
            samples=int(rng.integers(1, 9)),
            staleness=int(rng.integers(0, 5)),
            worker=i,
            center_at_pull=rng.standard_normal(size).astype(np.float32) if cls.needs_center_at_pull else None,
        )
        for i in range(n)
    ]


def _state_arrays(state):
    return [np.array(a, copy=True) for a in state]


@pytest.mark.parametrize("name", EXCHANGING)
def test_apply_inplace_equals_apply_bit_for_bit(name):
    s = get_strategy(name)
    rng = np.random.default_rng(3)
    state = s.init_server(rng.standard_normal(257).astype(np.float32))
    if isinstance(state, MomentumState):
        state = MomentumState(state.center, rng.standard_normal(257).astype(np.float32))
    ref = _state_arrays(state)
    commits = _commits(name, rng, 257)
    pure = s.apply(state, commits)
    for a, b in zip(state, ref):  # apply did not touch the state
        assert np.array_equal(a, b)
    fast = s.apply_inplace(type(state)(*[a.copy() for a in state]), commits)
    assert type(fast) is type(pure)
    for a, b in zip(pure, fast):
        assert a.dtype == np.float32 and b.dtype == np.float32
        assert a.tobytes() == b.tobytes()
    # and a second round on the results stays identical
    more = _commits(name, rng, 257)
    pure2 = s.apply(pure, more)
    fast2 = s.apply_inplace(fast, more)
    for a, b in zip(pure2, fast2):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", EXCHANGING)
@pytest.mark.parametrize("staleness", [None, 0])
def test_apply_into_equals_apply_bit_for_bit_and_leaves_the_center(name, staleness):
    """The server's double-buffered path: the new center goes into a spare buffer while the
    old one (which may still be on its way to a worker) stays exactly as it was."""
    s = get_strategy(name)
    rng = np.random.default_rng(5)
    state = s.init_server(rng.standard_normal(257).astype(np.float32))
    if isinstance(state, MomentumState):
        state = MomentumState(state.center, rng.standard_normal(257).astype(np.float32))
    work = type(state)(*[a.copy() for a in state])
    center_before = work.center.copy()
    spare = np.full(257, np.nan, np.float32)
    for round_ in range(3):  # ping-pong between two buffers, as the server does
        commits = _commits(name, rng, 257)
        if staleness is not None:
            commits = [c._replace(staleness=staleness) for c in commits]
        pure = s.apply(state, commits)
        old = work.center
        fast = s.apply_into(work, commits, spare)
        assert type(fast) is type(pure)
        assert np.shares_memory(fast.center, spare) and fast.center.shape == (257,)
        assert old.tobytes() == center_before.tobytes()  # the previous version is untouched
        for a, b in zip(pure, fast):
            assert b.dtype == np.float32 and a.tobytes() == b.tobytes()
        state, work, spare = pure, fast, old
        center_before = work.center.copy()


@pytest.mark.parametrize("name", EXCHANGING)
def test_rules_never_mutate_inputs_and_keep_dtype_and_length(name):
    s = get_strategy(name)
    rng = np.random.default_rng(4)
    local = rng.standard_normal(65).astype(np.float32)
    pulled = rng.standard_normal(65).astype(np.float32)
    l0, p0 = local.copy(), pulled.copy()
    wstate = s.init_worker(pulled)
    wstate, new_local, payload = s.commit(wstate, local, pulled)
    assert np.array_equal(local, l0) and np.array_equal(pulled, p0)
    for v in (new_local, payload):
        assert v.dtype == np.float32 and v.shape == (65,)
    center = rng.standard_normal(65).astype(np.float32)
    c0 = center.copy()
    _, after = s.after_pull(wstate, new_local, center)
    assert after.dtype == np.float32 and after.shape == (65,) and np.array_equal(center, c0)
    state = s.init_server(center)
    assert np.array_equal(center, c0)
    state.center[0] += 1  # the server state owns a copy
    assert np.array_equal(center, c0)
    commits = _commits(name, rng, 65)
    payloads = [np.array(c.payload, copy=True) for c in commits]
    before = _state_arrays(state)
    new = s.apply(state, commits)
    for a, b in zip(state, before):
        assert np.array_equal(a, b)
    for c, p in zip(commits, payloads):
        assert np.array_equal(c.payload, p)
    for a in new:
        assert a.dtype == np.float32 and a.shape == (65,)


@pytest.mark.parametrize("name", ASYNC)
def test_async_rules_take_one_commit(name):
    s = get_strategy(name)
    state = s.init_server(f32(1.0, 2.0))
    two = [Commit(f32(1.0, 1.0), center_at_pull=f32(1.0, 2.0))] * 2
    with pytest.raises(ValueError, match="one commit at a time"):
        s.apply(state, two)


# -- registry -----------------------------------------------------------------------------------------
def test_registry_knows_every_strategy():
    assert set(STRATEGIES) == {
        "single", "averaging", "ensemble", "downpour", "adag", "dynsgd", "aeasgd", "eamsgd", "easgd",
        "experimental", "localsgd", "diloco",
    }
    assert get_strategy(" ADAG ").name == "adag"
    assert strategy_defaults("adag") == {"window": 12}
    s = get_strategy("adag", window=3)
    assert s.replace(window=7).window == 7 and s.window == 3
    assert "adag(window=3)" == s.describe()


def test_unknown_strategy_lists_known_ones():
    with pytest.raises(UnknownStrategyError) as exc:
        get_strategy("hogwild")
    msg = str(exc.value)
    assert "'hogwild'" in msg
    for name in STRATEGIES:
        assert name in msg


def test_unknown_parameter_names_it():
    with pytest.raises(ValueError, match="'rho'.*parameters: window"):
        get_strategy("adag", rho=3)


@pytest.mark.parametrize(
    "name, param, value",
    [
        ("adag", "window", 0),
        ("downpour", "window", -3),
        ("localsgd", "window", 2.5),
        ("dynsgd", "window", True),
        ("aeasgd", "rho", 0),
        ("eamsgd", "rho", -1.0),
        ("easgd", "rho", float("nan")),
        ("aeasgd", "learning_rate", 0.0),
        ("eamsgd", "momentum", 1.0),
        ("eamsgd", "momentum", -0.1),
        ("diloco", "outer_momentum", 1.5),
        ("diloco", "outer_learning_rate", -0.7),
        ("experimental", "learning_rate", float("inf")),
    ],
)
def test_bad_hyperparameters_name_param_and_value(name, param, value):
    with pytest.raises(ValueError) as exc:
        get_strategy(name, **{param: value})
    msg = str(exc.value)
    assert param in msg and repr(value) in msg


def test_elastic_alpha_above_one_is_refused():
    with pytest.raises(ValueError, match="alpha"):
        get_strategy("aeasgd", rho=20.0, learning_rate=0.1)


def test_strategies_are_frozen_and_hashable():
    s = get_strategy("diloco")
    with pytest.raises(Exception):
        s.window = 3
    assert hash(s) == hash(get_strategy("diloco"))
