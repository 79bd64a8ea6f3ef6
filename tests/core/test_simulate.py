import json

import numpy as np
import pytest

from distkeras.core.simulate import (
    MLP,
    DelaySchedule,
    SimConfig,
    SoftmaxRegression,
    compare_all,
    format_comparison,
    simulate,
    stability_note,
    warnings_for,
)
from distkeras.core.strategies import get_strategy
from distkeras.data import load_digits

DATA = load_digits("both")
N_TRAIN = 1437


def run(strategy="adag", workers=3, **kw):
    kw.setdefault("epochs", 2)
    return simulate(SimConfig(strategy, workers, **kw), DATA)


def test_same_seed_same_result_bytes_and_weights():
    cfg = dict(strategy="adag", workers=4, delay="lognormal:0.5", codec="topk:0.05", epochs=2)
    a, b = run(**cfg), run(**cfg)
    assert json.dumps(a.summary) == json.dumps(b.summary)
    assert a.center.tobytes() == b.center.tobytes()
    c = run(**cfg, seed=1)
    assert c.center.tobytes() != a.center.tobytes()


def test_adag_with_four_workers_learns_digits():
    s = run("adag", 4, epochs=10).summary
    assert s["test_accuracy"] > 0.85
    assert s["final_loss"] < 0.5
    assert s["rejected"] == 0 and s["staleness"]["max"] >= 1  # real asynchrony
    assert len(s["history"]) == 10 and [h["epoch"] for h in s["history"]] == list(range(1, 11))


def test_localsgd_with_one_worker_is_plain_sgd():
    single = run("single", 1, epochs=2)
    local = run("localsgd", 1, epochs=2)
    assert local.summary["commits"] > 1
    assert local.center.tobytes() == single.center.tobytes()
    assert local.summary["test_accuracy"] == single.summary["test_accuracy"]


@pytest.mark.parametrize("name, workers", [("single", 8), ("ensemble", 4), ("adag", 5), ("localsgd", 3), ("averaging", 6), ("easgd", 2)])
def test_total_samples_are_the_same_for_every_strategy(name, workers):
    s = run(name, workers, epochs=2).summary
    assert s["samples"] == 2 * N_TRAIN
    assert s["workers"] == (1 if name == "single" else workers)


def test_synchronous_rounds_have_no_staleness():
    s = run("localsgd", 3, epochs=1, window=4).summary
    # 479 samples per worker, batch 8: 60 steps per epoch, windows of 4: 15 rounds of 3 commits
    assert s["rounds"] == 15 and s["commits"] == 45
    assert s["staleness"] == {"mean": 0.0, "max": 0}


def test_averaging_exchanges_once_per_pass():
    s = run("averaging", 4, epochs=3).summary
    assert s["window"] is None and s["rounds"] == 3 and s["commits"] == 12


def test_bytes_sent_follow_the_codec():
    size = SoftmaxRegression(64, 10).layout.size  # 650 float32 values
    none = run("adag", 2, epochs=1).summary
    assert none["bytes_sent"] == none["commits"] * 4 * size
    top = run("adag", 2, epochs=1, codec="topk:0.01").summary
    assert top["bytes_sent"] == top["commits"] * 8 * 7  # k = ⌈6.5⌉ = 7 (index + value)
    assert top["codec"] == "topk:0.01"
    # one pull to start and the center in every commit's reply (the worker loop commits and pulls
    # in one exchange, as on Spark): one pull more per worker than commits
    assert none["bytes_received"] == (none["commits"] + 2) * 4 * size
    # AEASGD pulls right before each commit instead (Zhang et al., Algorithm 1), not after it
    elastic = run("aeasgd", 2, epochs=1, window=4).summary
    assert elastic["bytes_received"] == (2 + elastic["commits"]) * 4 * size


def test_delay_schedules():
    assert DelaySchedule.parse("none").spec() == "none"
    assert DelaySchedule.parse("uniform:0.5") == DelaySchedule("uniform", 0.5)
    rng = np.random.default_rng(0)
    u = [DelaySchedule.parse("uniform:0.5").factor(rng, 0, 4) for _ in range(200)]
    assert 0.5 <= min(u) and max(u) <= 1.5
    ln = [DelaySchedule.parse("lognormal:0.5").factor(rng, 0, 4) for _ in range(4000)]
    assert abs(np.mean(ln) - 1.0) < 0.05  # mean-one lognormal
    s = DelaySchedule.parse("straggler:3")
    assert [s.factor(rng, k, 4) for k in range(4)] == [1.0, 1.0, 1.0, 3.0]
    for bad, match in [("gauss:1", "unknown delay"), ("uniform", "needs a value"), ("uniform:1.5", r"\[0, 1\)"),
                       ("straggler:0.5", ">= 1"), ("lognormal:x", "not a number"), ("none:1", "no argument")]:
        with pytest.raises(ValueError, match=match):
            DelaySchedule.parse(bad)


def test_a_straggler_slows_synchronous_rounds_but_not_asynchronous_workers():
    sync_fast = run("localsgd", 4, epochs=1).summary["sim_time"]
    sync_slow = run("localsgd", 4, epochs=1, delay="straggler:3").summary["sim_time"]
    assert sync_slow == pytest.approx(3 * sync_fast)  # every round waits for the straggler
    fast = run("adag", 4, epochs=1, delay="straggler:3").summary
    assert fast["sim_time"] == pytest.approx(3 * run("adag", 4, epochs=1).summary["sim_time"])  # it finishes last...
    assert fast["staleness"]["max"] > 4  # ...while the others commit many times in between


def test_ensemble_predicts_with_the_mean_of_probabilities():
    r = run("ensemble", 3, epochs=2)
    assert len(r.weights) == 3 and r.summary["commits"] == 0
    model = SoftmaxRegression(64, 10)
    probs = np.mean([model.predict_proba(w, DATA.x_test) for w in r.weights], axis=0)
    assert r.summary["test_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == DATA.y_test))


def test_eamsgd_workers_use_nesterov_momentum():
    s = run("eamsgd", 2, epochs=1, params={"rho": 2.0}).summary
    assert s["worker_momentum"] == 0.9 and s["params"]["rho"] == 2.0
    assert run("aeasgd", 2, epochs=1).summary["worker_momentum"] is None


def test_asynchronous_elastic_workers_commit_against_the_newest_center():
    """AEASGD/EAMSGD read the center right before each commit (Zhang et al., Algorithm 1, as the
    Spark worker does): no commit is stale, where ADAG's commits with 8 workers are. At the
    defaults (α = 0.5, 8 workers, 30 epochs) AEASGD then stays within 3 points of the single
    trainer (against a center of the previous exchange it fell 13 points behind)."""
    assert get_strategy("aeasgd").pulls_before_commit and get_strategy("eamsgd").pulls_before_commit
    assert not any(get_strategy(n).pulls_before_commit for n in ("easgd", "adag", "localsgd", "single"))
    elastic = run("aeasgd", 8, epochs=30).summary
    assert elastic["staleness"]["max"] == 0 and elastic["commits"] > 8
    assert run("adag", 8, epochs=1).summary["staleness"]["max"] > 0
    single = run("single", 1, epochs=30).summary
    assert elastic["test_accuracy"] >= single["test_accuracy"] - 0.03


def test_mlp_trains():
    s = run("downpour", 2, epochs=3, model="mlp", hidden=16).summary
    assert s["model"] == "mlp:16" and s["test_accuracy"] > 0.8


@pytest.mark.parametrize("model", [SoftmaxRegression(64, 10), MLP(64, 10, 8)])
def test_hand_written_gradients_match_finite_differences(model):
    rng = np.random.default_rng(0)
    w = model.init(rng)
    w += rng.normal(0, 0.1, w.shape).astype(np.float32)
    x, y = DATA.x_train[:16], DATA.y_train[:16]
    grad = np.zeros_like(w)
    loss = model.loss_grad(w, x, y, grad)
    assert np.isfinite(loss)
    eps = np.float32(1e-2)
    for i in rng.choice(w.size, 12, replace=False):
        wp, wm = w.copy(), w.copy()
        wp[i] += eps
        wm[i] -= eps
        g = np.zeros_like(w)
        numeric = (model.loss_grad(wp, x, y, g) - model.loss_grad(wm, x, y, g)) / (2 * float(eps))
        assert grad[i] == pytest.approx(numeric, abs=2e-3, rel=2e-2)


@pytest.mark.parametrize("name", ["adag", "localsgd"])
def test_a_rejected_commit_ends_the_run_as_failed(name):
    """One poisoned sample turns a worker's window NaN: the server rejects that commit and the
    run stops there, as the Spark run fails (one worker loop, core.worker_loop); the summary
    says which worker, when and why, and the center it stopped with was never poisoned."""
    x = DATA.x_train.copy()
    x[100, 5] = np.nan  # one worker's gradient turns NaN whenever it sees this sample
    r = simulate(SimConfig(name, 3, epochs=2), (x, DATA.y_train, DATA.x_test, DATA.y_test))
    s = r.summary
    failed = s["failed"]
    assert failed["reason"] == "non_finite" and "the update contains NaN or Inf values" in failed["error"], failed
    assert failed["worker"] in (0, 1, 2) and failed["sim_time"] == s["sim_time"] > 0
    assert s["rejected"] == 1 and s["rejected_by_reason"] == {"non_finite": 1}
    assert s["samples"] < 2 * N_TRAIN  # it stopped early
    assert np.all(np.isfinite(r.center)) and np.isfinite(s["test_loss"])  # (the train loss is NaN: the poisoned sample)
    assert run(name, 3, epochs=1).summary["failed"] is None


@pytest.mark.parametrize("kw, match", [
    (dict(workers=0), "workers must be an integer >= 1, got 0"),
    (dict(epochs=0), "epochs"),
    (dict(batch_size=-1), "batch_size"),
    (dict(lr=0.0), "lr must be"),
    (dict(seed=-1), "seed"),
    (dict(model="resnet"), "unknown model 'resnet'"),
    (dict(delay="sometimes"), "unknown delay"),
    (dict(codec="zip"), "unknown codec"),
    (dict(window=0), "window must be an integer >= 1, got 0"),
    (dict(strategy="aeasgd", params={"rho": -1}), "rho must be a finite number > 0, got -1"),
    (dict(strategy="hogwild"), "known strategies: single, averaging"),
    (dict(workers=2000), "every worker needs data"),
])
def test_bad_configs_are_refused(kw, match):
    kw = {"strategy": "adag"} | kw
    with pytest.raises(ValueError, match=match):
        simulate(SimConfig(**kw), DATA)


def test_summary_is_json_and_has_the_documented_keys():
    s = run("dynsgd", 2, epochs=1, delay="uniform:0.3").summary
    for key in ("strategy", "params", "workers", "window", "codec", "delay", "seed", "test_accuracy", "final_loss",
                "commits", "bytes_sent", "bytes_received", "staleness", "rejected", "samples", "sim_time", "history"):
        assert key in s
    json.dumps(s, allow_nan=False)


def test_stability_note_follows_zhang_et_al():
    # asynchronous: each commit is against the center read just before it, and α <= 1
    assert stability_note(get_strategy("aeasgd"), 8) is None  # α = 0.5
    assert stability_note(get_strategy("eamsgd", rho=10), 100) is None  # α = 1
    # synchronous: a round's p commits share one center, the center moves p·α of the way
    assert stability_note(get_strategy("easgd"), 8) is None  # α = 0.05, p·α = 0.4
    assert stability_note(get_strategy("easgd"), 20) is None  # p·α = 1
    assert "beta=p*alpha=2 > 1" in stability_note(get_strategy("easgd"), 40)
    assert stability_note(get_strategy("easgd", rho=90 / 40), 40) is None  # α = 0.9 / 40
    assert stability_note(get_strategy("adag"), 100) is None
    s = run("localsgd", 2, epochs=1, codec="topk:0.1").summary
    assert any("whole weight vectors" in w for w in warnings_for(s))


def test_compare_all_table():
    rows = compare_all(DATA, 2, epochs=1)
    labels = [r["label"] for r in rows]
    assert labels[0] == "single" and "adag topk:0.01" in labels and len(set(labels)) == len(labels)
    assert all(r["baseline_accuracy"] == rows[0]["test_accuracy"] for r in rows)
    table = format_comparison(rows)
    assert "vs single" in table and "diloco" in table
