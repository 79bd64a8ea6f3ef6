"""Runs adapter checks in one process with one Keras backend; writes a JSON report.

Started by ``test_adapter.py`` as ``python _worker.py --backend B --tasks t1,t2 --workdir D --out R``
with ``KERAS_BACKEND=B``. Each task records ``{"ok": bool, "error": traceback or None, ...facts}``
so that the tests can assert on each check separately; one failing check does not hide
the others. Files for the cross-backend checks go through ``--workdir`` as JSON + .npy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from distkeras.backends import (  # noqa: E402
    BackendError,
    KerasAdapter,
    LayoutError,
    ModelNotBuiltError,
    ModelSpec,
    SpecError,
    make_batches,
    select_backend,
    sgd_nesterov,
)

B = 16  # batch size
W = 4  # window


def data(n=8 * B, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=n)
    return x, y


def bn_model(keras, features=12, classes=3):
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(classes),
        ],
        name="bn_mlp",
    )


def bn_spec(keras, optimizer="adam"):
    keras.utils.set_random_seed(1)
    return ModelSpec.from_model(
        bn_model(keras),
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ["accuracy"],
    )


def expect_raises(exc_type, fn, *needles):
    try:
        fn()
    except exc_type as exc:
        message = str(exc)
        missing = [n for n in needles if n not in message]
        assert not missing, f"error message {message!r} lacks {missing}"
        return message
    raise AssertionError(f"expected {exc_type.__name__}")


# -- tasks -----------------------------------------------------------------------------------


def task_basics(keras, backend, workdir):
    spec = bn_spec(keras)
    adapter = KerasAdapter.from_spec(spec)
    facts = {"backend": adapter.backend, "fast_path": adapter.fast_path, "layout_size": adapter.layout.size}
    assert adapter.backend == backend
    assert adapter.model is adapter.to_keras_model()
    assert np.array_equal(adapter.get_flat(), spec.weights), "adapter does not start from the spec's weights"
    # select_backend: same backend is fine, another one is a clear error.
    assert select_backend(backend) == backend
    other = "jax" if backend != "jax" else "tensorflow"
    facts["switch_error"] = expect_raises(BackendError, lambda: select_backend(other), "already imported", backend, other)
    return facts


def task_flat_roundtrip(keras, backend, workdir):
    spec = bn_spec(keras)
    x, y = data()
    xb, yb = make_batches(x, y, B)
    results = {}
    # The same sequence of operations on the fast weight I/O and on the generic one
    # (Keras public API), which must end with the same bits. On JAX the fast I/O writes by a
    # compiled split (small weights, this model) or by aligned puts (large ones): both ways.
    adapters = [("fast", KerasAdapter.from_spec(spec)), ("generic", KerasAdapter.from_spec(spec, fast=False))]
    io = adapters[0][1]._io
    if hasattr(io, "split_writes"):
        assert io.split_writes, "a small model's vector should be written by the compiled split"
        aligned = KerasAdapter.from_spec(spec)
        aligned._io.split_writes = False
        adapters.append(("fast_aligned", aligned))
    for kind, adapter in adapters:
        adapter.train_window(xb[:W], yb[:W])  # moving statistics move away from 0 / 1
        names = adapter.layout.names
        assert any("moving_mean" in n for n in names) and any("moving_variance" in n for n in names), names
        nontrainable = list(adapter.model.non_trainable_weights)
        assert nontrainable and all(any(v.path.endswith(n) for n in names) for v in nontrainable)
        before = adapter.get_flat()
        mean_entry = next(e for e in adapter.layout.entries if "moving_mean" in e.name)
        assert np.any(before[mean_entry.offset : mean_entry.offset + mean_entry.size] != 0), "moving mean did not move"
        # Bit-exact round trip of arbitrary values (including the moving statistics).
        r = np.random.default_rng(7).normal(size=adapter.layout.size).astype(np.float32)
        r_copy = r.copy()
        adapter.set_flat(r)
        r[:] = 12345.0  # the caller's vector must not be the model's storage
        got = adapter.get_flat()
        assert got.dtype == np.float32 and got.shape == (adapter.layout.size,) and got.flags.writeable
        assert np.array_equal(got, r_copy), f"{kind}: round trip is not bit-exact"
        for var, e in zip(adapter.model.weights, adapter.layout.entries):
            assert var.path.endswith(e.name), (var.path, e.name)
            value = np.asarray(keras.ops.convert_to_numpy(var.value))
            assert np.array_equal(value, r_copy[e.offset : e.offset + e.size].reshape(e.shape)), var.path
        out = np.empty(adapter.layout.size, np.float32)
        assert adapter.get_flat(out=out) is out and np.array_equal(out, r_copy)
        got[:] = 0.0  # get_flat returns a copy: writing it does not change the model
        assert np.array_equal(adapter.get_flat(), r_copy)
        # Sets and training interleaved (buffers reused by the fast path must never leak
        # into the model): each set is seen exactly, and training starts from it.
        for i in range(5):
            adapter.set_flat(r_copy if i % 2 else before)
            assert np.array_equal(adapter.get_flat(), r_copy if i % 2 else before)
            adapter.train_window(xb[W : 2 * W], yb[W : 2 * W])
            assert not np.array_equal(adapter.get_flat(), before)
        results[kind] = adapter.get_flat()
    return {
        "max_diff_fast_vs_generic": float(np.max(np.abs(results["fast"] - results["generic"]))),
        "max_diff_aligned_vs_generic": float(np.max(np.abs(results["fast_aligned"] - results["generic"]))) if "fast_aligned" in results else None,
        "kinds": sorted(results),
    }


def task_optimizer_state(keras, backend, workdir):
    spec = bn_spec(keras)
    x, y = data(n=2 * W * B)
    xb, yb = make_batches(x, y, B)
    adapter = KerasAdapter.from_spec(spec)
    logs1 = adapter.train_window(xb[:W], yb[:W])
    logs2 = adapter.train_window(xb[W:], yb[W:])
    ours = adapter.get_flat()
    # Reference: one fit over the same batches, in order.
    ref = spec.build_model()
    history = ref.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    fit_flat = adapter.layout.flatten([np.asarray(v.numpy()) for v in ref.weights])
    # Negative control: resetting the optimizer state between the windows must be visible.
    reset2 = KerasAdapter.from_spec(spec)
    reset2.train_window(xb[:W], yb[:W])
    for v in reset2.model.optimizer.variables:
        if "iteration" not in v.path:
            v.assign(np.zeros(v.shape, v.dtype))
    reset2.train_window(xb[W:], yb[W:])
    facts = {
        "max_diff_vs_fit": float(np.max(np.abs(ours - fit_flat))),
        "max_diff_reset_vs_fit": float(np.max(np.abs(reset2.get_flat() - fit_flat))),
        "window_loss_mean": (logs1["loss"] + logs2["loss"]) / 2,
        "fit_loss": float(history.history["loss"][-1]),
        "optimizer_iterations": int(np.asarray(adapter.model.optimizer.iterations.numpy())),
        "logs_keys": sorted(logs1),
    }
    assert facts["optimizer_iterations"] == 2 * W, facts
    assert facts["max_diff_vs_fit"] <= 1e-5, facts
    assert facts["max_diff_reset_vs_fit"] > 1e-4, facts
    assert abs(facts["window_loss_mean"] - facts["fit_loss"]) <= 1e-5, facts
    return facts


LONG = 11  # batches of the last window: longer than the JAX fast path's chunk of 8 steps


def task_fast_vs_generic(keras, backend, workdir):
    """The fast path against the generic reference: same weights and logs, window after window,
    the last one longer than a compiled chunk (on JAX: one chunk of 8 steps, then 3 single steps)."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    spec = ModelSpec.from_model(
        model, keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    )
    rng = np.random.default_rng(5)
    x = rng.normal(size=((3 * W + LONG) * B, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=len(x))
    xb, yb = make_batches(x, y, B)
    fast, generic = KerasAdapter.from_spec(spec), KerasAdapter.from_spec(spec, fast=False)
    assert generic.fast_path is None
    facts = {"fast_path": fast.fast_path, "weight_diffs": [], "loss_diffs": []}
    runner = getattr(fast, "_window_runner", None)
    if hasattr(runner, "chunks"):  # JAX: the compiled calls of a window (start, steps)
        facts["chunks"] = {n: runner.chunks(n) for n in (1, 5, 8, LONG, 16)}
    bounds = [(i * W, (i + 1) * W) for i in range(3)] + [(3 * W, 3 * W + LONG)]
    for a, b in bounds:
        lf = fast.train_window(xb[a:b], yb[a:b])
        lg = generic.train_window(list(xb[a:b]), list(yb[a:b]))
        assert sorted(lf) == sorted(lg), (lf, lg)
        facts["loss_diffs"].append(max(abs(lf[k] - lg[k]) for k in lf))
        facts["weight_diffs"].append(float(np.max(np.abs(fast.get_flat() - generic.get_flat()))))
    if backend in ("jax", "tensorflow"):
        assert fast.fast_path is not None
    assert max(facts["weight_diffs"]) <= 1e-5, facts
    assert max(facts["loss_diffs"]) <= 1e-5, facts
    return facts


def two_io_spec(keras, lr=0.05, optimizer=None):
    """A functional model with two inputs ('pixels' (4, 4, 1), 'meta' (3,)) and two outputs
    ('cls': 3-way softmax, 'reg': one value)."""
    keras.utils.set_random_seed(6)
    pixels = keras.Input((4, 4, 1), name="pixels")
    meta = keras.Input((3,), name="meta")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(pixels), meta])
    h = keras.layers.Dense(8, activation="relu")(h)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    model = keras.Model([pixels, meta], [cls, reg], name="two_io")
    return ModelSpec.from_model(model, optimizer or keras.optimizers.SGD(lr), ["sparse_categorical_crossentropy", "mse"])


def two_io_batches(n_batches, seed=8):
    rng = np.random.default_rng(seed)
    n = n_batches * B
    xp = rng.normal(size=(n, 4, 4, 1)).astype("float32")
    xm = rng.normal(size=(n, 3)).astype("float32")
    yc = rng.integers(0, 3, size=n).astype("int32")
    yr = rng.normal(size=n).astype("float32")
    w = rng.uniform(0.0, 2.0, size=n).astype("float32")
    cut = lambda a: [a[i : i + B] for i in range(0, n, B)]  # noqa: E731
    xs = [{"pixels": p, "meta": m} for p, m in zip(cut(xp), cut(xm))]  # dict inputs, by name
    ys = [[c, r] for c, r in zip(cut(yc), cut(yr))]  # list outputs, in order
    return xs, ys, cut(w)


def task_multi_io_fast_vs_generic(keras, backend, workdir):
    """Two inputs (a dict by input name), two outputs (a list), per-sample weights: the fast path
    equals the generic train_on_batch path, window after window, and weighting every sample by
    2 under SGD(lr) is unweighted SGD(2 lr)."""
    spec = two_io_spec(keras, optimizer=keras.optimizers.Adam(0.01))
    xs, ys, ws = two_io_batches(3 * W)
    fast, generic = KerasAdapter.from_spec(spec), KerasAdapter.from_spec(spec, fast=False)
    facts = {"fast_path": fast.fast_path, "weight_diffs": [], "loss_diffs": [], "logs_keys": None}
    for i in range(3):
        part = slice(i * W, (i + 1) * W)
        weights = ws[part] if i != 1 else None  # a window without weights in between
        lf = fast.train_window(xs[part], ys[part], weights)
        lg = generic.train_window(xs[part], ys[part], weights)
        assert sorted(lf) == sorted(lg), (lf, lg)
        facts["logs_keys"] = sorted(lf)
        facts["loss_diffs"].append(max(abs(lf[k] - lg[k]) for k in lf))
        facts["weight_diffs"].append(float(np.max(np.abs(fast.get_flat() - generic.get_flat()))))
    if backend in ("jax", "tensorflow"):
        assert fast.fast_path is not None
    assert {"loss", "cls_loss", "reg_loss"} <= set(facts["logs_keys"]), facts
    assert max(facts["weight_diffs"]) <= 1e-5, facts
    assert max(facts["loss_diffs"]) <= 1e-5, facts
    # weights matter: the same window with weights differs from it without
    a, b = KerasAdapter.from_spec(spec), KerasAdapter.from_spec(spec)
    a.train_window(xs[:W], ys[:W], ws[:W])
    b.train_window(xs[:W], ys[:W])
    facts["weighted_vs_unweighted"] = float(np.max(np.abs(a.get_flat() - b.get_flat())))
    assert facts["weighted_vs_unweighted"] > 1e-4, facts
    # weight 2 on every sample with SGD(0.05) == unweighted SGD(0.1) (the gradient doubles)
    twice = [np.full_like(w, 2.0) for w in ws[:W]]
    w2 = KerasAdapter.from_spec(two_io_spec(keras, lr=0.05))
    lr2 = KerasAdapter.from_spec(two_io_spec(keras, lr=0.1))
    assert np.array_equal(w2.get_flat(), lr2.get_flat())
    w2.train_window(xs[:W], ys[:W], twice)
    lr2.train_window(xs[:W], ys[:W])
    facts["weight2_vs_lr2"] = float(np.max(np.abs(w2.get_flat() - lr2.get_flat())))
    assert facts["weight2_vs_lr2"] <= 1e-5, facts
    # predict and evaluate take the structures too
    pred = fast.predict({"pixels": xs[0]["pixels"][:5], "meta": xs[0]["meta"][:5]}, batch_size=4)
    assert [np.shape(p) for p in pred] == [(5, 3), (5, 1)], [np.shape(p) for p in pred]
    logs = fast.evaluate(xs[0], ys[0], batch_size=8, sample_weight=ws[0])
    assert {"loss", "cls_loss", "reg_loss"} <= set(logs), logs
    return facts


def task_nesterov(keras, backend, workdir):
    spec = bn_spec(keras).with_optimizer("sgd", learning_rate=0.05, momentum=0.9, nesterov=True)
    adapter = KerasAdapter.from_spec(spec)
    opt = adapter.model.optimizer
    assert type(opt).__name__ == "SGD" and opt.nesterov and abs(float(opt.momentum) - 0.9) < 1e-7, opt.get_config()
    # The helper and an optimizer object give the same settings.
    spec2 = bn_spec(keras).with_optimizer(sgd_nesterov(0.05, 0.9))
    spec3 = bn_spec(keras).with_optimizer(keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    for s in (spec2, spec3):
        o = s.compile_objects()["optimizer"]
        assert o.nesterov and abs(float(o.momentum) - 0.9) < 1e-7
        assert abs(float(np.asarray(o.learning_rate)) - 0.05) < 1e-7
    x, y = data()
    xb, yb = make_batches(x, y, B)
    logs = [adapter.train_window(xb[i * W : (i + 1) * W], yb[i * W : (i + 1) * W]) for i in range(2)]
    assert all(np.isfinite(l["loss"]) for l in logs)
    # momentum state persists: it is an optimizer variable and is not zero after training
    momenta = [np.asarray(v.numpy()) for v in opt.variables if "momentum" in v.path]
    assert momenta and any(np.any(m != 0) for m in momenta)
    return {"optimizer": opt.get_config()["name"], "losses": [l["loss"] for l in logs]}


def task_inference(keras, backend, workdir):
    spec = bn_spec(keras)
    adapter = KerasAdapter.from_spec(spec)
    x, y = data(n=70)  # not a multiple of the batch size
    pred = adapter.predict(x, batch_size=32)
    direct = np.asarray(adapter.model(x, training=False))
    assert pred.shape == (70, 3), pred.shape
    diff = float(np.max(np.abs(pred - direct)))
    assert diff <= 1e-5, diff
    logs = adapter.evaluate(x, y, batch_size=32)
    assert set(logs) >= {"loss", "accuracy"} and all(isinstance(v, float) for v in logs.values()), logs
    # A spec through JSON + .npy (no pickle) rebuilds the same model.
    path = os.path.join(workdir, f"spec_{backend}.json")
    spec.with_weights(adapter.get_flat()).save(path)
    again = KerasAdapter.from_spec(ModelSpec.load(path))
    assert np.array_equal(again.get_flat(), adapter.get_flat())
    assert np.array_equal(again.predict(x, batch_size=32), pred)
    return {"predict_vs_call": diff, "evaluate": logs}


def task_custom_layer(keras, backend, workdir):
    from tests.backends import custom_layers

    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((6,)), custom_layers.Scale(2.0), keras.layers.Dense(4), custom_layers.Scale(0.5)],
        name="custom",
    )
    spec = ModelSpec.from_model(model, keras.optimizers.Adam(0.01), custom_layers.scaled_mse)
    assert "tests.backends.custom_layers" in spec.modules, spec.modules
    # Through JSON, as a worker would get it.
    rebuilt = ModelSpec.from_json(spec.to_json(), weights=spec.weights)
    adapter = KerasAdapter.from_spec(rebuilt)
    assert [type(l).__name__ for l in adapter.model.layers] == ["Scale", "Dense", "Scale"]
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2 * W * B, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 4))).astype("float32")  # a linear target the model can fit
    before = np.asarray(model(x[:10]))
    assert np.allclose(adapter.predict(x[:10], batch_size=B), before, atol=1e-6)
    # the loss in use is the custom one (half the mean squared error), evaluated on the rebuilt model
    pred = adapter.predict(x, batch_size=B)
    start = adapter.evaluate(x, y, batch_size=B)["loss"]
    assert abs(start - 0.5 * float(np.mean((y - pred) ** 2))) <= 1e-4 * start, (start, pred)
    scale_weights = [np.array(w) for w in adapter.model.layers[0].get_weights()]
    xb, yb = make_batches(x, y, B)
    l1 = adapter.train_window(xb[:W], yb[:W])
    l2 = adapter.train_window(xb[W:], yb[W:])
    for _ in range(8):
        adapter.train_window(xb[:W], yb[:W])
        adapter.train_window(xb[W:], yb[W:])
    end = adapter.evaluate(x, y, batch_size=B)["loss"]
    assert np.isfinite(l1["loss"]) and np.isfinite(l2["loss"])
    assert end < 0.5 * start, (start, end)  # it learns the target
    # the gradients reach the custom layer's own weights
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(adapter.model.layers[0].get_weights(), scale_weights))
    # The live model gets the trained weights and agrees with the adapter.
    model.set_weights(adapter.layout.unflatten(adapter.get_flat()))
    diff = float(np.max(np.abs(np.asarray(model(x[:10])) - adapter.predict(x[:10], batch_size=B))))
    assert diff <= 1e-5, diff
    # An unregistered custom layer is refused on the driver, with a clear message.
    bad = keras.Sequential([keras.Input((6,)), custom_layers.Unregistered(), keras.layers.Dense(1)])
    msg = expect_raises(SpecError, lambda: ModelSpec.from_model(bad, "sgd", "mse"), "Unregistered", "register_keras_serializable")
    return {"modules": list(spec.modules), "losses": [l1["loss"], l2["loss"]], "loss_start_end": [start, end], "unregistered_error": msg}


def task_bad_input(keras, backend, workdir):
    spec = bn_spec(keras)
    adapter = KerasAdapter.from_spec(spec)
    n = adapter.layout.size
    good = adapter.get_flat()
    facts = {}
    facts["short"] = expect_raises(LayoutError, lambda: adapter.set_flat(np.zeros(n - 1, np.float32)), f"length {n}", "Layout of")
    facts["long"] = expect_raises(LayoutError, lambda: adapter.set_flat(np.zeros(n + 3, np.float32)), f"length {n}")
    facts["dtype"] = expect_raises(LayoutError, lambda: adapter.set_flat(np.zeros(n, np.float64)), "float32", "float64", "Layout of")
    facts["2d"] = expect_raises(LayoutError, lambda: adapter.set_flat(np.zeros((1, n), np.float32)), f"length {n}")
    facts["list"] = expect_raises(LayoutError, lambda: adapter.set_flat([0.0] * n), "numpy float32 vector")
    assert np.array_equal(adapter.get_flat(), good), "a rejected set_flat changed the weights"
    # An unbuilt model (no input shape) is refused on both entry points.
    unbuilt = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(1)])
    facts["unbuilt_spec"] = expect_raises(ModelNotBuiltError, lambda: ModelSpec.from_model(unbuilt, "sgd", "mse"), "not built", "input shape")
    unbuilt.compile("sgd", "mse")
    facts["unbuilt_adapter"] = expect_raises(ModelNotBuiltError, lambda: KerasAdapter(unbuilt), "not built")
    # Missing compile settings, wrong windows.
    facts["no_optimizer"] = expect_raises(SpecError, lambda: ModelSpec.from_model(bn_model(keras)), "optimizer")
    x, y = data()
    xb, yb = make_batches(x, y, B)
    facts["empty"] = expect_raises(ValueError, lambda: adapter.train_window([], []), "empty")
    facts["mismatch"] = expect_raises(ValueError, lambda: adapter.train_window(xb[:2], yb[:3]), "2 x batches", "3 y batches")
    # A spec whose weights do not fit the model.
    facts["spec_weights"] = expect_raises(LayoutError, lambda: spec.with_weights(np.zeros(5, np.float32)), f"length {n}")
    return facts


def task_compiled_model(keras, backend, workdir):
    """A model compiled on the driver needs no separate compile arguments."""
    keras.utils.set_random_seed(1)
    model = bn_model(keras)
    model.compile(keras.optimizers.RMSprop(0.002), "sparse_categorical_crossentropy", metrics=["accuracy"])
    spec = ModelSpec.from_model(model)
    adapter = KerasAdapter.from_spec(ModelSpec.from_json(spec.to_json(), spec.weights))
    assert type(adapter.model.optimizer).__name__ == "RMSprop"
    x, y = data()
    xb, yb = make_batches(x, y, B)
    logs = adapter.train_window(xb[:W], yb[:W])
    assert set(logs) == {"loss", "accuracy"}, logs
    wrapped = KerasAdapter(model)  # a live, compiled model of this process
    assert np.array_equal(wrapped.get_flat(), spec.weights)
    return {"logs": logs}


# -- cross-backend steps -------------------------------------------------------------------------


def cross_build(keras, backend, workdir):
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ],
        name="cross",
    )
    spec = ModelSpec.from_model(model, keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    spec.save(os.path.join(workdir, "cross_spec.json"))
    rng = np.random.default_rng(12)
    x = rng.normal(size=(5 * W * B, 8, 8, 1)).astype("float32")
    np.save(os.path.join(workdir, "cross_x.npy"), x, allow_pickle=False)
    np.save(os.path.join(workdir, "cross_y.npy"), rng.integers(0, 3, size=len(x)), allow_pickle=False)
    return {"built_on": backend, "size": int(spec.weights.size)}


def cross_train(keras, backend, workdir):
    spec = ModelSpec.load(os.path.join(workdir, "cross_spec.json"))
    x = np.load(os.path.join(workdir, "cross_x.npy"), allow_pickle=False)
    y = np.load(os.path.join(workdir, "cross_y.npy"), allow_pickle=False)
    adapter = KerasAdapter.from_spec(spec)
    assert np.array_equal(adapter.get_flat(), spec.weights)
    xb, yb = make_batches(x, y, B)
    losses = [adapter.train_window(xb[i : i + W], yb[i : i + W])["loss"] for i in range(0, len(xb), W)]
    trained = adapter.get_flat()
    np.save(os.path.join(workdir, "cross_trained.npy"), trained, allow_pickle=False)
    np.save(os.path.join(workdir, "cross_pred.npy"), adapter.predict(x, batch_size=32), allow_pickle=False)
    return {"trained_on": backend, "losses": losses, "moved": float(np.max(np.abs(trained - spec.weights)))}


def cross_check(keras, backend, workdir):
    spec = ModelSpec.load(os.path.join(workdir, "cross_spec.json"))
    trained = np.load(os.path.join(workdir, "cross_trained.npy"), allow_pickle=False)
    pred_other = np.load(os.path.join(workdir, "cross_pred.npy"), allow_pickle=False)
    x = np.load(os.path.join(workdir, "cross_x.npy"), allow_pickle=False)
    adapter = KerasAdapter.from_spec(spec.with_weights(trained))
    flat_equal = bool(np.array_equal(adapter.get_flat(), trained))
    model = adapter.to_keras_model()
    pred = np.asarray(model.predict(x, batch_size=32, verbose=0))
    diff = float(np.max(np.abs(pred - pred_other)))
    assert flat_equal, "flat vector changed across backends"
    assert diff <= 1e-5, diff
    return {"checked_on": backend, "flat_bit_equal": flat_equal, "max_pred_diff": diff}


TASKS = {name[5:]: fn for name, fn in globals().items() if name.startswith("task_")}
TASKS.update(cross_build=cross_build, cross_train=cross_train, cross_check=cross_check)


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    select_backend(args.backend)
    import keras

    report = {}
    for name in args.tasks.split(","):
        t0 = time.perf_counter()
        try:
            facts = TASKS[name](keras, args.backend, args.workdir) or {}
            report[name] = {"ok": True, "error": None, **_jsonable(facts)}
        except BaseException:  # noqa: BLE001 - report every failure, go on with the other tasks
            report[name] = {"ok": False, "error": traceback.format_exc()}
        report[name]["seconds"] = round(time.perf_counter() - t0, 2)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
