"""The public API: ``import distkeras`` (lazy), ``distkeras.trainers`` (dist-keras's module path),
twelve explicit trainer classes whose signatures match dist-keras's positional order and their
strategies' defaults, and clear errors for arguments in the wrong place.

Building a trainer needs Keras (JAX here) but no Spark.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import distkeras
from distkeras.core.strategies import get_strategy
from distkeras.frontends import trainers as impl

ROOT = Path(distkeras.__file__).parent.parent
FRAMEWORKS = {"keras", "jax", "jaxlib", "tensorflow", "torch", "pyspark", "pyarrow", "pandas"}
NAMES = ["SingleTrainer", "AveragingTrainer", "EnsembleTrainer", "DOWNPOUR", "ADAG", "DynSGD", "AEASGD", "EAMSGD", "EASGD", "Experimental", "LocalSGD", "DiLoCo"]

HEAD = ["keras_model", "worker_optimizer", "loss", "metrics"]
DIST = ["num_workers", "batch_size", "features_col", "label_col", "num_epoch"]
# dist-keras 0.2's positional order after metrics (cerndb/dist-keras distkeras/trainers.py);
# EASGD, LocalSGD and DiLoCo are new and follow its distributed trainers' order.
POSITIONAL = {
    "SingleTrainer": ["features_col", "label_col", "num_epoch", "batch_size", "loss_weights"],
    "AveragingTrainer": ["features_col", "label_col", "num_epoch", "batch_size", "num_workers", "loss_weights"],
    "EnsembleTrainer": ["features_col", "label_col", "batch_size", "num_ensembles", "loss_weights"],
    "DOWNPOUR": DIST + ["communication_window", "master_port", "loss_weights"],
    "ADAG": DIST + ["communication_window", "master_port", "loss_weights"],
    "DynSGD": DIST + ["communication_window", "master_port", "loss_weights"],
    "AEASGD": DIST + ["communication_window", "rho", "learning_rate", "master_port", "loss_weights"],
    "EAMSGD": DIST + ["communication_window", "rho", "learning_rate", "momentum", "master_port", "loss_weights"],
    "Experimental": DIST + ["communication_window", "learning_rate", "master_port", "loss_weights"],
    "EASGD": DIST + ["communication_window", "rho", "learning_rate"],
    "LocalSGD": DIST + ["communication_window"],
    "DiLoCo": DIST + ["communication_window", "outer_learning_rate", "outer_momentum"],
}


def _params(cls):
    return inspect.signature(cls.__init__).parameters


# --- import distkeras ------------------------------------------------------------------------


def test_import_distkeras_is_lazy_and_exposes_the_api():
    code = (
        "import json, sys\n"
        "import distkeras\n"
        "after_import = sorted(sys.modules)\n"
        "import distkeras.trainers\n"
        "from distkeras.trainers import ADAG\n"
        "import distkeras.frontends.trainers as impl\n"
        "assert distkeras.ADAG is ADAG is impl.ADAG is distkeras.trainers.ADAG\n"
        "after_trainers = sorted(sys.modules)\n"
        "print(json.dumps([after_import, after_trainers, distkeras.ADAG.__name__]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    after_import, after_trainers, name = json.loads(out.stdout)
    assert name == "ADAG"
    assert not {m.split(".")[0] for m in after_import} & FRAMEWORKS
    assert not [m for m in after_import if m.startswith("distkeras.")], "import distkeras loads only the package root"
    # the trainers module is light too: Keras loads when a trainer is built, Spark when it trains
    assert not {m.split(".")[0] for m in after_trainers} & FRAMEWORKS


def test_every_public_name_resolves():
    from distkeras.core import recommend
    from distkeras.frontends import estimator, model_io
    from distkeras.spark import inference

    expected = {name: getattr(impl, name) for name in ["Trainer", *NAMES]}
    expected.update(
        KerasEstimator=estimator.KerasEstimator,
        KerasModel=estimator.KerasModel,
        predict=inference.predict,
        evaluate=inference.evaluate,
        save_model=model_io.save_model,
        load_model=model_io.load_model,
        recommended=recommend.recommended,
        StrategySettingsWarning=recommend.StrategySettingsWarning,
    )
    for name, value in expected.items():
        assert getattr(distkeras, name) is value, name
    assert set(distkeras.__all__) == set(expected) | {"__version__", "trainers"}
    assert set(distkeras.__all__) <= set(dir(distkeras))
    import distkeras.trainers as public

    assert distkeras.trainers is public and set(public.__all__) == {"Trainer", *NAMES}
    for name in public.__all__:
        assert getattr(public, name) is getattr(impl, name)
    with pytest.raises(AttributeError, match="module 'distkeras' has no attribute 'Nope'"):
        distkeras.Nope  # noqa: B018


def test_saved_stage_class_paths_stay():
    """Saved pipelines store these paths in their metadata; they must keep loading."""
    assert f"{distkeras.KerasEstimator.__module__}.{distkeras.KerasEstimator.__name__}" == "distkeras.frontends.estimator.KerasEstimator"
    assert f"{distkeras.KerasModel.__module__}.{distkeras.KerasModel.__name__}" == "distkeras.frontends.estimator.KerasModel"


# --- the twelve classes ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_explicit_class_with_dist_keras_positional_order(name):
    cls = getattr(impl, name)
    assert cls.__module__ == "distkeras.frontends.trainers" and cls.__init__.__qualname__ == f"{name}.__init__"
    params = _params(cls)
    kinds = {p.kind for p in params.values()}
    assert inspect.Parameter.VAR_POSITIONAL not in kinds and inspect.Parameter.VAR_KEYWORD not in kinds
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and n != "self"]
    assert positional == HEAD + POSITIONAL[name]
    assert all(p.annotation is not inspect.Parameter.empty for n, p in params.items() if n != "self")
    strategy = get_strategy(cls.strategy_name)
    assert re.findall(r"[A-Z][a-z]+", strategy.paper)[0] in cls.__doc__  # the paper's first author
    assert "Args:" in cls.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_signature_defaults_are_the_strategys(name):
    cls = getattr(impl, name)
    params = _params(cls)
    strategy = get_strategy(cls.strategy_name)
    for key, default in strategy.params().items():
        public = cls._public_names.get(key, key)
        if not strategy.exchanges and key == "window":
            assert public not in params  # single and ensemble never exchange
            continue
        assert params[public].default == default, (name, public)


def test_every_trainer_takes_every_option_of_the_base():
    base = {n: p.default for n, p in _params(impl.Trainer).items() if p.kind is p.KEYWORD_ONLY}
    assert {"backend", "codec", "shards", "checkpoint", "checkpoint_every", "seed", "progress", "repartition", "ps_host", "ps_bind", "ps_tls", "round_timeout", "spark", "loss_weights"} <= set(base)
    for name in NAMES:
        params = _params(getattr(impl, name))
        for option, default in base.items():
            assert option in params and params[option].default == default, (name, option)
        for option in ("metrics", "worker_optimizer", "loss", "features_col", "label_col", "batch_size"):
            assert params[option].default == _params(impl.Trainer)[option].default, (name, option)


# --- building trainers (Keras, no Spark) ---------------------------------------------------------


@pytest.fixture(scope="module")
def mlp(keras):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])


def test_dist_keras_positional_calls(mlp):
    t = impl.AveragingTrainer(mlp, "adam", "mse", ["mae"], "f", "l", 3, 16, 4)
    assert (t.features_col, t.label_col, t.num_epoch, t.batch_size, t.num_workers) == ("f", "l", 3, 16, 4)
    t = impl.EnsembleTrainer(mlp, "adam", "mse", ["mae"], "f", "l", 16, 3)
    assert (t.batch_size, t.num_workers, t.num_epoch) == (16, 3, 1)
    t = impl.SingleTrainer(mlp, "adam", "mse", ["mae"], "f", "l", 3, 16)
    assert (t.num_epoch, t.batch_size, t.num_workers) == (3, 16, 1)
    t = impl.ADAG(mlp, "adam", "mse", ["mae"], 4, 16, "f", "l", 2, 7)
    assert (t.num_workers, t.batch_size, t.features_col, t.num_epoch, t.strategy.window) == (4, 16, "f", 2, 7)
    t = impl.EAMSGD(mlp, "adam", "mse", None, 2, 16, "f", "l", 1, 10, 2.0, 0.2, 0.5)
    assert t.strategy.params() == {"window": 10, "rho": 2.0, "learning_rate": 0.2, "momentum": 0.5}
    t = impl.Experimental(mlp, "adam", "mse", None, 2, 16, "f", "l", 1, 5, 1.0)
    assert t.strategy.params() == {"window": 5, "learning_rate": 1.0}


def test_master_port_is_ignored_with_a_warning(mlp):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        impl.DOWNPOUR(mlp, "adam", "mse", ["mae"], 2, 16, "f", "l", 1, 5, 5000)
    (w,) = [w for w in caught if "master_port" in str(w.message)]
    assert "master_port=5000 is ignored" in str(w.message) and "free port" in str(w.message)
    assert w.filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        impl.ADAG(mlp, "adam", "mse")  # the default: no warning


def test_parallelism_factor_other_than_one_is_refused(mlp):
    impl.ADAG(mlp, "adam", "mse", parallelism_factor=1)
    with pytest.raises(ValueError, match=r"ADAG: parallelism_factor=3 has no counterpart here: .*raise num_workers"):
        impl.ADAG(mlp, "adam", "mse", parallelism_factor=3)


def test_loss_weights_reach_compile(mlp):
    t = impl.ADAG(mlp, "adam", "mse", loss_weights=[0.5])
    assert t.spec.compile_kwargs == {"loss_weights": [0.5]}


@pytest.mark.parametrize(
    "call, message",
    [
        # our pre-release order (num_workers 5th) on a class whose dist-keras order differs
        (lambda m: impl.AveragingTrainer(m, "adam", "mse", ["mae"], 4, 32), r"AveragingTrainer: features_col must be a column name \(str\), or a list/dict of them for several inputs or outputs, got 4 \(int\); AveragingTrainer takes dist-keras's positional order \(keras_model, worker_optimizer, loss, metrics, features_col, label_col, num_epoch, batch_size, num_workers, loss_weights\)"),
        (lambda m: impl.EnsembleTrainer(m, "adam", "mse", ["mae"], "f", "l", "x"), r"EnsembleTrainer: batch_size must be an int, got 'x' \(str\)"),
        (lambda m: impl.EnsembleTrainer(m, "adam", "mse", ["mae"], "f", "l", 8, 2.5), r"num_ensembles must be an int, got 2.5"),
        # dist-keras before 0.2 had no metrics argument
        (lambda m: impl.ADAG(m, "adam", "mse", 4, 32), r"ADAG: metrics must be a list of metrics, e.g. metrics=\['accuracy'\], got 4 \(int\); .*before, it was num_workers"),
        (lambda m: impl.SingleTrainer(m, "adam", "mse", "features", "label"), r"got 'features' \(str\); .*before, it was features_col"),
        # dist-keras's abstract base order (keras_model, loss, worker_optimizer)
        (lambda m: impl.ADAG(m, "mse", "adam"), r"ADAG: loss='adam' is an optimizer: the order is ADAG\(keras_model, worker_optimizer, loss, ...\)"),
        # a string where a number goes: the `str < int` failure of the type() factory
        (lambda m: impl.ADAG(m, "adam", "mse", ["mae"], 4, 32, "f", "l", 1, "12"), r"ADAG: communication_window must be an int, got '12' \(str\)"),
        (lambda m: impl.AEASGD(m, "adam", "mse", ["mae"], 4, 32, "f", "l", 1, 12, "5"), r"AEASGD: rho must be a number, got '5' \(str\)"),
        (lambda m: impl.ADAG(m, "adam", "mse", num_workers=True), r"num_workers must be an int, got True \(bool\)"),
        (lambda m: impl.ADAG(m, "adam", "mse", label_col=None), r"label_col must be a column name \(str\), or a list/dict of them for several inputs or outputs, got None"),
    ],
)
def test_arguments_in_the_wrong_place_are_refused_by_name(mlp, call, message):
    with pytest.raises(TypeError, match=message):
        call(mlp)


def test_values_are_still_checked(mlp):
    with pytest.raises(ValueError, match="num_workers must be >= 1, got 0"):
        impl.ADAG(mlp, "adam", "mse", num_workers=0)
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        impl.ADAG(mlp, "adam", "mse", communication_window=0)
    with pytest.raises(TypeError, match="Trainer has no strategy: use one of the trainers, e.g. ADAG"):
        impl.Trainer(mlp)


def test_make_trainer_maps_generic_options(mlp):
    t = impl.make_trainer("ensemble", mlp, loss="mse", num_workers=3, window=None)
    assert type(t) is impl.EnsembleTrainer and t.num_workers == 3
    t = impl.make_trainer("single", mlp, loss="mse", num_workers=4, window=5)
    assert type(t) is impl.SingleTrainer and t.num_workers == 1
    assert impl.make_trainer("adag", mlp, loss="mse", window=3).strategy.window == 3
    assert impl.make_trainer("ADAG", mlp, loss="mse", communication_window=4).strategy.window == 4
    with pytest.raises(ValueError, match=r"strategy 'adag' \(ADAG\) has no parameter 'rho'"):
        impl.make_trainer("adag", mlp, loss="mse", rho=2.0)
    with pytest.raises(ValueError, match=r"unknown strategy 'nope'; choose one of \["):
        impl.make_trainer("nope", mlp)
    assert impl.make_trainer("single", mlp, loss="mse", feed_memory="256MB").feed_memory == 256 * 10**6
    assert impl.make_trainer("adag", mlp, loss="mse")._options().feed_memory == "auto"
    with pytest.raises(ValueError, match="feed_memory must be at least 65536 bytes"):
        impl.DOWNPOUR(mlp, "adam", "mse", feed_memory=1000)


# --- the README --------------------------------------------------------------------------------


def test_readme_has_the_porting_table():
    readme = (ROOT / "README.md").read_text()
    assert "## Porting from dist-keras" in readme
    section = readme.split("## Porting from dist-keras", 1)[1].split("\n## ", 1)[0]
    for name in ["Trainer", "SingleTrainer", "AveragingTrainer", "EnsembleTrainer", "DistributedTrainer", "AsynchronousDistributedTrainer",
                 "DOWNPOUR", "ADAG", "DynSGD", "AEASGD", "EAMSGD", "Experimental", "ModelPredictor", "AccuracyEvaluator",
                 "master_port", "parallelism_factor", "loss_weights", "communication_window", "num_ensembles"]:
        assert f"`{name}" in section, name
    assert "from distkeras.trainers import ADAG" in readme


def test_an_optimizer_object_as_loss_is_refused(keras, mlp):
    with pytest.raises(TypeError, match=r"ADAG: loss=<.*SGD.*> is an optimizer"):
        impl.ADAG(mlp, "mse", keras.optimizers.SGD())
    t = impl.ADAG(mlp, keras.optimizers.SGD(0.1), keras.losses.MeanSquaredError())  # the right order
    assert t.spec.optimizer["class_name"] == "SGD"
