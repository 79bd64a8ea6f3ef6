"""``ModelSpec``: everything needed to rebuild a compiled Keras model in another process.

A spec is plain data: the model's Keras config (``model.to_json()``), the compile
settings (optimizer, loss, metrics as Keras-serialized dicts or names) and the names
of the modules that define custom classes, all JSON-able; plus, optionally, the
initial weights as one float32 vector (kept next to the JSON as ``.npy`` by
:meth:`ModelSpec.save`). Live models are never shipped and nothing is pickled.

Building a spec from a live model and rebuilding a model from a spec need Keras; the
helpers that only edit plain data (:meth:`ModelSpec.with_optimizer` with a name,
:func:`sgd_nesterov`, JSON I/O) do not import it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distkeras.backends.errors import ModelNotBuiltError, SpecError
from distkeras.core.flat import FLAT_DTYPE, Layout, LayoutError

FORMAT = "distkeras.ModelSpec/1"

#: Compile arguments a spec may carry besides optimizer, loss and metrics.
COMPILE_KWARGS = frozenset({"loss_weights", "weighted_metrics", "run_eagerly", "jit_compile", "auto_scale_loss"})

_KERAS_PACKAGES = ("keras", "builtins", "tensorflow", "tf_keras", "jax", "torch", "numpy")


def sgd_nesterov(learning_rate: float = 0.01, momentum: float = 0.9) -> dict:
    """A serialized ``keras.optimizers.SGD(learning_rate, momentum, nesterov=True)`` (no Keras import).

    The local optimizer of EAMSGD; use it with :meth:`ModelSpec.with_optimizer`.
    """
    if not 0.0 <= momentum < 1.0:
        raise SpecError(f"momentum must be in [0, 1), got {momentum!r}")
    return {
        "class_name": "SGD",
        "config": {"learning_rate": float(learning_rate), "momentum": float(momentum), "nesterov": True},
    }


def _is_serialized(obj: Any) -> bool:
    return isinstance(obj, dict) and "class_name" in obj


def _serialize(obj: Any, what: str) -> Any:
    """Names stay names; Keras objects/functions become Keras-serialized dicts; lists and dicts recurse."""
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if _is_serialized(obj):
        return copy.deepcopy(obj)
    if isinstance(obj, (list, tuple)):
        return [_serialize(o, what) for o in obj]
    if isinstance(obj, dict):
        return {str(k): _serialize(v, what) for k, v in obj.items()}
    import keras

    try:
        return _jsonable(keras.saving.serialize_keras_object(obj), what)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"cannot serialize the {what} {obj!r}: {exc}") from exc


def _jsonable(data: Any, what: str) -> Any:
    """``data`` after a JSON round trip (tuples become lists); SpecError if it is not JSON-able."""
    try:
        return json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"the {what} is not JSON-serializable: {exc}") from exc


def _custom_classes(objs: list[Any]) -> list[type]:
    """Classes of ``objs`` (and their sub-layers) defined outside Keras and the backends."""
    seen, out = set(), []
    stack = list(objs)
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, (str, int, float, bool, dict)):
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
            continue
        cls = obj if isinstance(obj, type) else type(obj)
        if callable(obj) and not hasattr(obj, "get_config") and hasattr(obj, "__module__"):
            cls = obj  # a plain function (custom loss or metric)
        flatten = getattr(obj, "_flatten_layers", None)
        if callable(flatten) and not isinstance(obj, type):
            stack.extend(l for l in flatten(include_self=False) if l is not obj)
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        module = getattr(cls, "__module__", "") or ""
        if module.split(".")[0] not in _KERAS_PACKAGES:
            out.append(cls)
    return out


def _check_registered(classes: list[type]) -> list[str]:
    """Module names to import on workers; SpecError for custom classes Keras could not find there."""
    import keras

    modules = []
    for cls in classes:
        module = cls.__module__
        registered = keras.saving.get_registered_name(cls)
        if ">" not in str(registered):
            raise SpecError(
                f"custom object {module}.{cls.__qualname__} is not registered Keras-serializable, "
                "so a worker could not rebuild it from the config: decorate it with "
                "@keras.saving.register_keras_serializable(package=...) in an importable module"
            )
        if module == "__main__":
            warnings.warn(
                f"custom object {cls.__qualname__} is defined in __main__, which other processes "
                "(Spark executors) cannot import; move it to an importable module",
                stacklevel=3,
            )
            continue
        if module not in modules:
            modules.append(module)
    return modules


def weight_names(model) -> list[str]:
    """Stable names of ``model.weights``: their paths without the model's own name in front.

    A model built from its config may or may not prefix its variables' paths with its
    name (it depends on how it was built), so the prefix is dropped on both sides.
    """
    prefix = f"{model.name}/"
    return [v.path[len(prefix) :] if v.path.startswith(prefix) else v.path for v in model.weights]


def model_layout(model) -> Layout:
    """The flat layout of all of ``model.weights`` (trainable and not), in Keras's order."""
    weights = list(model.weights)
    return Layout.from_shapes([tuple(v.shape) for v in weights], weight_names(model), [v.dtype for v in weights])


def _model_weights_vector(model) -> tuple[Layout, np.ndarray]:
    layout = model_layout(model)
    from distkeras.backends.weights import variable_to_numpy

    return layout, layout.flatten([variable_to_numpy(v) for v in model.weights])


def _struct_entries(struct, tensors, fallback_names) -> tuple[list[tuple[str, Any]], str]:
    if isinstance(struct, dict):
        return [(str(k), struct[k]) for k in sorted(struct)], "dict"  # Keras flattens dicts by sorted key
    names = list(fallback_names) if fallback_names is not None else [getattr(t, "name", None) for t in tensors]
    entries = [(str(n if n else f"{i}"), t) for i, (n, t) in enumerate(zip(names, tensors))]
    return entries, "single" if len(entries) == 1 else "list"


def model_signature(model) -> dict | None:
    """The model's inputs and outputs as plain data (JSON-able), for the data feed::

        {"inputs": [{"name": ..., "shape": [...]}, ...], "input_struct": "single" | "list" | "dict",
         "outputs": [...], "output_struct": ...}

    Shapes leave out the batch dimension (unknown dimensions are None). Names are the dict keys
    of a model built on dicts, else the input tensors' names and ``model.output_names``. Flat
    order is Keras's (``model.inputs``/``model.outputs``). None for a model without symbolic
    inputs (e.g. a subclassed model)."""
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs:
        return None

    def shape(t) -> list:
        return [None if d is None else int(d) for d in tuple(t.shape)[1:]]

    ins, in_struct = _struct_entries(getattr(model, "_inputs_struct", None), inputs, None)
    first = (getattr(model, "_layers", None) or [None])[0]
    if len(ins) == 1 and type(first).__name__ == "InputLayer":  # a Sequential: its Input's name
        ins = [(first.name, ins[0][1])]
    try:
        out_names = list(model.output_names)
    except AttributeError:  # Sequential
        out_names = [model.layers[-1].name] if len(outputs) == 1 and model.layers else None
    outs, out_struct = _struct_entries(getattr(model, "_outputs_struct", None), outputs, out_names)
    return {
        "inputs": [{"name": n, "shape": shape(t)} for n, t in ins],
        "input_struct": in_struct,
        "outputs": [{"name": n, "shape": shape(t)} for n, t in outs],
        "output_struct": out_struct,
    }


def check_built(model) -> None:
    """Raise :class:`ModelNotBuiltError` unless ``model`` has its weights."""
    if not getattr(model, "built", False):
        raise ModelNotBuiltError(
            f"model {getattr(model, 'name', model)!r} is not built, so it has no weights and no "
            "flat layout yet: give it an input shape (start it with keras.Input(shape=...), or "
            "call model.build((None, ...)) or model(x) once) before handing it to distkeras"
        )
    if not model.weights:
        raise ModelNotBuiltError(f"model {getattr(model, 'name', model)!r} has no weights to train")


@dataclass(frozen=True)
class ModelSpec:
    """A JSON-able recipe for a compiled Keras model, plus optional initial weights.

    Build one on the driver with :meth:`from_model`; rebuild the model anywhere with
    :meth:`build_model` (or ``KerasAdapter.from_spec``). ``to_json``/``from_json`` and
    ``save``/``load`` move it between processes (JSON + ``.npy``, no pickle).
    """

    model: dict
    optimizer: Any
    loss: Any = None
    metrics: Any = None
    compile_kwargs: dict = field(default_factory=dict)
    modules: tuple[str, ...] = ()
    layout: dict | None = None
    weights: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not _is_serialized(self.model):
            raise SpecError("ModelSpec.model must be a Keras-serialized model config (a dict with 'class_name')")
        if self.optimizer is None:
            raise SpecError("ModelSpec needs an optimizer (a Keras optimizer object, name or serialized dict)")
        bad = set(self.compile_kwargs) - COMPILE_KWARGS
        if bad:
            raise SpecError(f"unsupported compile arguments {sorted(bad)}; allowed: {sorted(COMPILE_KWARGS)}")
        object.__setattr__(self, "modules", tuple(self.modules))
        if self.weights is not None:
            weights = np.asarray(self.weights)
            if self.layout is not None:
                Layout.from_dict(self.layout).check_vector(weights)
            elif weights.dtype != FLAT_DTYPE or weights.ndim != 1:
                raise LayoutError(f"weights must be a 1-D float32 vector, got {weights.dtype} {weights.shape}")
            object.__setattr__(self, "weights", weights)

    # -- building from a live model (driver side) ---------------------------------------
    @classmethod
    def from_model(
        cls,
        model,
        optimizer: Any = None,
        loss: Any = None,
        metrics: Any = None,
        *,
        include_weights: bool = True,
        compile_kwargs: dict | None = None,
        modules: tuple[str, ...] | list[str] = (),
    ) -> "ModelSpec":
        """The spec of a live, built Keras model.

        ``optimizer``, ``loss`` and ``metrics`` are Keras objects, functions or names;
        left as None they are taken from the model's own ``compile()`` if it was compiled.
        With ``include_weights`` the model's current weights (all of them, BatchNorm
        moving statistics included) travel with the spec. Custom layers, losses and
        metrics must be registered Keras-serializable (``@keras.saving.register_keras_serializable``)
        and defined in importable modules; their modules are recorded and imported by
        :meth:`build_model`. ``modules`` adds more modules to import there.
        """
        check_built(model)
        compile_config = {}
        if getattr(model, "compiled", False) and hasattr(model, "get_compile_config"):
            compile_config = model.get_compile_config() or {}
        if optimizer is None:
            optimizer = compile_config.get("optimizer")
        if loss is None:
            loss = compile_config.get("loss")
        if metrics is None:
            metrics = compile_config.get("metrics")
        kwargs = {k: compile_config[k] for k in ("loss_weights", "weighted_metrics") if compile_config.get(k) is not None}
        kwargs.update(compile_kwargs or {})
        if optimizer is None:
            raise SpecError(
                "no optimizer: pass optimizer=... (a Keras optimizer or its name) or compile the model first"
            )
        if loss is None:
            raise SpecError("no loss: pass loss=... (a Keras loss or its name) or compile the model first")
        try:
            config = json.loads(model.to_json())
        except Exception as exc:
            raise SpecError(
                f"cannot serialize model {model.name!r} to a Keras config ({exc}); subclassed models "
                "and custom layers need get_config() and @keras.saving.register_keras_serializable"
            ) from exc
        config.pop("compile_config", None)
        custom = _custom_classes([model, optimizer, loss, metrics])
        all_modules = _check_registered(custom)
        for m in modules:
            if m not in all_modules:
                all_modules.append(m)
        layout, vector = _model_weights_vector(model) if include_weights else (None, None)
        return cls(
            model=config,
            optimizer=_jsonable(_serialize(optimizer, "optimizer"), "optimizer"),
            loss=_jsonable(_serialize(loss, "loss"), "loss"),
            metrics=_jsonable(_serialize(metrics, "metrics"), "metrics"),
            compile_kwargs=_jsonable(kwargs, "compile arguments"),
            modules=tuple(all_modules),
            layout=layout.to_dict() if layout is not None else None,
            weights=vector,
        )

    # -- editing --------------------------------------------------------------------------
    def with_optimizer(self, optimizer: Any, **config: Any) -> "ModelSpec":
        """A copy with another worker optimizer.

        ``optimizer`` is a Keras optimizer object, a name (``"sgd"``) or a serialized
        dict; ``config`` overrides its settings, e.g.
        ``spec.with_optimizer("sgd", learning_rate=0.01, momentum=0.9, nesterov=True)``
        for the Nesterov-momentum local optimizer of EAMSGD (see also :func:`sgd_nesterov`).
        Names and dicts need no Keras import.
        """
        if isinstance(optimizer, str):
            serialized: Any = {"class_name": optimizer, "config": {}} if config else optimizer
        else:
            serialized = _serialize(optimizer, "optimizer")
        if config:
            serialized = copy.deepcopy(serialized)
            serialized.setdefault("config", {}).update(config)
        return dataclasses.replace(self, optimizer=_jsonable(serialized, "optimizer"))

    def with_weights(self, weights: np.ndarray | None) -> "ModelSpec":
        """A copy carrying ``weights`` (a float32 vector of this spec's layout) or none."""
        return dataclasses.replace(self, weights=None if weights is None else np.array(weights, copy=True))

    # -- JSON (+ .npy) I/O ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON-able part of the spec (everything but the weights vector)."""
        return {
            "format": FORMAT,
            "model": self.model,
            "optimizer": self.optimizer,
            "loss": self.loss,
            "metrics": self.metrics,
            "compile_kwargs": self.compile_kwargs,
            "modules": list(self.modules),
            "layout": self.layout,
        }

    @classmethod
    def from_dict(cls, data: dict, weights: np.ndarray | None = None) -> "ModelSpec":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise SpecError(f"not a distkeras model spec (expected format {FORMAT!r}, found {found!r})")
        if "model" not in data or "optimizer" not in data:
            raise SpecError("model spec lacks 'model' or 'optimizer'")
        return cls(
            model=data["model"],
            optimizer=data["optimizer"],
            loss=data.get("loss"),
            metrics=data.get("metrics"),
            compile_kwargs=dict(data.get("compile_kwargs") or {}),
            modules=tuple(data.get("modules") or ()),
            layout=data.get("layout"),
            weights=weights,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str, weights: np.ndarray | None = None) -> "ModelSpec":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"model spec is not valid JSON: {exc}") from exc
        return cls.from_dict(data, weights)

    @staticmethod
    def _weights_path(path: str | os.PathLike) -> str:
        root, _ = os.path.splitext(os.fspath(path))
        return root + ".npy"

    def save(self, path: str | os.PathLike) -> None:
        """Write the spec as JSON to ``path`` and its weights (if any) to the same name with ``.npy``."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
        weights_path = self._weights_path(path)
        if self.weights is not None:
            np.save(weights_path, self.weights, allow_pickle=False)
        elif os.path.exists(weights_path):
            os.remove(weights_path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelSpec":
        """Read a spec written by :meth:`save` (weights from the ``.npy`` beside it, if present)."""
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        weights_path = cls._weights_path(path)
        weights = np.load(weights_path, allow_pickle=False) if os.path.exists(weights_path) else None
        return cls.from_json(text, weights)

    # -- rebuilding (any process) -------------------------------------------------------------
    def import_modules(self) -> None:
        """Import the modules that register this spec's custom classes."""
        for name in self.modules:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise SpecError(
                    f"module {name!r}, which defines custom objects of this model, cannot be imported "
                    f"in this process ({exc}): install it or put it on PYTHONPATH (on Spark executors too)"
                ) from exc

    def compile_objects(self) -> dict:
        """Fresh Keras optimizer, loss and metrics for ``model.compile`` (needs Keras)."""
        from distkeras.backends.select import import_keras

        keras = import_keras()
        self.import_modules()

        def loss_obj(obj):
            if obj is None or isinstance(obj, str):
                return obj
            if isinstance(obj, list):
                return [loss_obj(o) for o in obj]
            if isinstance(obj, dict) and not _is_serialized(obj):
                return {k: loss_obj(v) for k, v in obj.items()}
            return keras.losses.deserialize(obj)

        def metric_obj(obj):
            if obj is None or isinstance(obj, str):
                return obj
            if isinstance(obj, list):
                return [metric_obj(o) for o in obj]
            if isinstance(obj, dict) and not _is_serialized(obj):
                return {k: metric_obj(v) for k, v in obj.items()}
            return keras.metrics.deserialize(obj)

        try:
            optimizer = keras.optimizers.get(copy.deepcopy(self.optimizer))
            out = dict(optimizer=optimizer, loss=loss_obj(copy.deepcopy(self.loss)))
            metrics = metric_obj(copy.deepcopy(self.metrics))
            weighted = metric_obj(copy.deepcopy(self.compile_kwargs.get("weighted_metrics")))
        except Exception as exc:
            raise SpecError(f"cannot rebuild the compile settings of this model spec: {exc}") from exc
        if metrics is not None:
            out["metrics"] = metrics
        out.update({k: v for k, v in self.compile_kwargs.items() if k != "weighted_metrics"})
        if weighted is not None:
            out["weighted_metrics"] = weighted
        return out

    def build_model(self, compile: bool = True):
        """A new Keras model from this spec, compiled, with the spec's weights if it has any."""
        from distkeras.backends.select import import_keras

        keras = import_keras()
        self.import_modules()
        try:
            model = keras.saving.deserialize_keras_object(copy.deepcopy(self.model), safe_mode=True)
        except Exception as exc:
            raise SpecError(
                f"cannot rebuild the model from its config ({type(exc).__name__}: {exc}); custom layers "
                "must be registered Keras-serializable and importable here"
            ) from exc
        check_built(model)
        if compile:
            model.compile(**self.compile_objects())
        if self.weights is not None:
            layout, _ = _model_weights_vector(model)
            if self.layout is not None:
                expected = Layout.from_dict(self.layout)
                if expected.shapes != layout.shapes:
                    raise LayoutError(
                        f"the rebuilt model does not match the spec's weights: the spec has "
                        f"{expected.describe()}, the model has {layout.describe()}"
                    )
            layout.check_vector(self.weights)
            for variable, array in zip(model.weights, layout.unflatten(self.weights)):
                variable.assign(np.array(array, dtype=variable.dtype, copy=True))
        return model
