"""Keras callbacks on the driver of a distributed run.

``trainer.train(df, validation=vdf, callbacks=[...])`` drives standard ``keras.callbacks``
objects as ``fit`` would, once per epoch of the run, with a Keras model (built once from the
model spec) that holds the center:

* ``on_train_begin()`` before the workers start;
* for every epoch k (0-based, as in ``fit``), once the parameter server has applied k+1 epochs'
  worth of samples: ``on_epoch_begin(k)`` then ``on_epoch_end(k, logs)``, the model holding the
  center of that moment. ``logs`` has the center's metrics on the validation DataFrame with a
  ``val_`` prefix (``val_loss``, ``val_accuracy``, ...) and, for strategies without a parameter
  server (single, ensemble), ``loss``: the workers' mean training loss over the epoch (the
  asynchronous and synchronous strategies report their workers' losses per commit, in
  ``history.commits``, not per epoch);
* ``on_train_end()`` with the model holding the center the run returns; the model's weights
  after it are the ones returned, so ``EarlyStopping(restore_best_weights=True)`` returns the
  best epoch's center.

Setting ``model.stop_training = True`` (``EarlyStopping`` does) stops the workers at their next
exchange with the parameter server (see :mod:`distkeras.ps.service`); strategies without a
server run their epochs to the end and the run returns the center of the epoch that stopped.

Files: ``ModelCheckpoint`` and ``CSVLogger`` may be given any fsspec URL (``memory://``,
``s3://``, ``hdfs://``, ...): Keras writes to a local temporary folder and every file written
there is copied to the URL after each epoch and at the end. ``TensorBoard`` writes where its
summary writer can (a local folder; ``gs://`` and the like through TensorFlow).

Spark ML's :class:`~distkeras.frontends.estimator.KerasEstimator` takes callbacks as plain
data (:func:`callbacks_to_json` / :func:`callbacks_from_json`): a JSON list of
``{"class_name": ..., "config": {...}}`` naming built-in ``keras.callbacks`` classes and their
constructor arguments. Nothing is pickled.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from typing import Any, Iterable

import numpy as np

#: the path attribute of the built-in callbacks that write files
_PATH_ATTRS = {"ModelCheckpoint": "filepath", "CSVLogger": "filename"}
#: keys of a run's epoch record that are not validation metrics
_NOT_METRICS = ("epoch", "samples", "train_loss")


def _is_remote(path: Any) -> bool:
    return isinstance(path, str) and "://" in path and not path.lower().startswith("file:")


class _RemoteFiles:
    """Local stand-ins for the fsspec URLs of file-writing callbacks; ``sync()`` uploads what changed."""

    def __init__(self):
        self._tmp: str | None = None
        self._roots: list[tuple[str, str]] = []  # (local root, URL prefix "scheme://")
        self._redirected: list[tuple[Any, str, str]] = []  # (callback, attribute, the user's URL)
        self._seen: dict[str, tuple[float, int]] = {}

    def redirect(self, callback) -> None:
        attr = _PATH_ATTRS.get(type(callback).__name__)
        if attr is None or not _is_remote(getattr(callback, attr, None)):
            return
        from distkeras.frontends.model_io import normalize_url

        url = normalize_url(getattr(callback, attr))
        scheme, rest = url.split("://", 1)
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="distkeras-callbacks-")
        root = os.path.join(self._tmp, str(len(self._roots)))
        local = os.path.join(root, rest.lstrip("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        self._redirected.append((callback, attr, getattr(callback, attr)))
        setattr(callback, attr, local)
        self._roots.append((root, scheme + "://"))

    def sync(self) -> None:
        if not self._roots:
            return
        import fsspec

        for root, prefix in self._roots:
            for folder, _dirs, files in os.walk(root):
                for name in files:
                    local = os.path.join(folder, name)
                    st = os.stat(local)
                    key = (st.st_mtime, st.st_size)
                    if self._seen.get(local) == key:
                        continue
                    url = prefix + os.path.relpath(local, root).replace(os.sep, "/")
                    fs, path = fsspec.core.url_to_fs(url)
                    parent = fs._parent(path)
                    if parent:
                        try:
                            fs.makedirs(parent, exist_ok=True)
                        except Exception:  # object stores have no folders
                            pass
                    fs.put_file(local, path)
                    self._seen[local] = key

    def close(self) -> None:
        for callback, attr, url in self._redirected:  # the user's objects get their URLs back
            setattr(callback, attr, url)
        self._redirected = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class CallbackDriver:
    """Runs ``callbacks`` for a distributed run; ``adapter`` is a KerasAdapter whose model holds
    the center (the trainer's evaluator). ``on_epoch`` is the runner's hook."""

    def __init__(self, callbacks: Iterable[Any], adapter, epochs: int):
        from distkeras.backends.select import import_keras

        keras = import_keras()
        self.adapter = adapter
        self.model = adapter.model
        self.files = _RemoteFiles()
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, keras.callbacks.Callback):
                raise TypeError(f"callbacks must be keras.callbacks.Callback objects, got {type(cb).__name__}")
            self.files.redirect(cb)
        self.callbacks = keras.callbacks.CallbackList(callbacks, add_history=False, add_progbar=False, model=self.model, epochs=int(epochs), verbose=0, steps=None)
        self.logs: dict[str, float] = {}
        self.stopped = False

    def begin(self) -> None:
        self.model.stop_training = False
        self.callbacks.on_train_begin()

    def on_epoch(self, record: dict, center: np.ndarray) -> bool:
        """One epoch of the run: the callbacks see the model holding ``center``; True to stop."""
        epoch = int(record["epoch"]) - 1
        self.adapter.set_flat(np.asarray(center, dtype=np.float32))
        logs = {f"val_{k}": float(v) for k, v in record.items() if k not in _NOT_METRICS}
        if "train_loss" in record:
            logs["loss"] = float(record["train_loss"])
        self.callbacks.on_epoch_begin(epoch)
        self.callbacks.on_epoch_end(epoch, logs)
        self.logs = logs
        self.files.sync()
        if getattr(self.model, "stop_training", False):
            self.stopped = True
        return self.stopped

    def end(self, center: np.ndarray) -> np.ndarray:
        """``on_train_end`` with the model holding ``center``; returns the model's weights after it."""
        self.adapter.set_flat(np.asarray(center, dtype=np.float32))
        self.callbacks.on_train_end(self.logs)
        self.files.sync()
        return self.adapter.get_flat()

    def close(self) -> None:
        self.files.close()


# --- callbacks as plain data (the Estimator's param) ---------------------------------------------


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def callback_to_dict(callback: Any) -> dict[str, Any]:
    """``{"class_name", "config"}`` of a built-in ``keras.callbacks`` object (its constructor
    arguments, read back from the attributes of the same name), or of such a dict itself."""
    if isinstance(callback, dict):
        if not isinstance(callback.get("class_name"), str) or not isinstance(callback.get("config", {}), dict):
            raise TypeError(f"a callback as data is {{'class_name': NAME, 'config': {{...}}}}, got {callback!r}")
        return {"class_name": callback["class_name"], "config": dict(callback.get("config", {}))}
    from distkeras.backends.select import import_keras

    keras = import_keras()
    name = type(callback).__name__
    if getattr(keras.callbacks, name, None) is not type(callback):
        raise TypeError(f"only built-in keras.callbacks classes can be saved as data, got {type(callback).__module__}.{name}")
    config = {}
    for param in list(inspect.signature(type(callback).__init__).parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(callback, param.name):
            continue  # not kept under its own name: the default (check below)
        value = getattr(callback, param.name)
        if _jsonable(value):
            config[param.name] = value
    rebuilt = callback_from_dict({"class_name": name, "config": config})
    for key, value in vars(callback).items():  # what the round trip loses would change its behaviour
        if _jsonable(value) and not key.startswith("_") and getattr(rebuilt, key, value) != value:
            raise TypeError(f"cannot save the {name} callback as data ({key}={value!r} is not a constructor argument); give it as {{'class_name': {name!r}, 'config': {{...}}}}")
    return {"class_name": name, "config": config}


def callback_from_dict(data: dict[str, Any]):
    from distkeras.backends.select import import_keras

    keras = import_keras()
    name = data.get("class_name")
    cls = getattr(keras.callbacks, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, keras.callbacks.Callback)) or name in ("Callback", "CallbackList", "LambdaCallback"):
        raise ValueError(f"unknown callback {name!r}: give a built-in keras.callbacks class such as EarlyStopping, ModelCheckpoint, CSVLogger, TensorBoard")
    try:
        return cls(**dict(data.get("config", {})))
    except TypeError as exc:
        raise ValueError(f"bad config for callback {name}: {exc}") from None


def callbacks_to_json(callbacks: Any) -> str:
    """A JSON list of ``{"class_name", "config"}`` from callback objects, dicts, or such JSON."""
    if callbacks is None:
        return "[]"
    if isinstance(callbacks, str):
        text = callbacks.strip() or "[]"
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TypeError(f"callbacks must be a JSON list of {{class_name, config}}: {exc}") from None
        if not isinstance(data, list):
            raise TypeError("callbacks must be a JSON list of {class_name, config}")
        callbacks = data
    if not isinstance(callbacks, (list, tuple)):
        callbacks = [callbacks]
    return json.dumps([callback_to_dict(cb) for cb in callbacks], allow_nan=False)


def callbacks_from_json(text: str) -> list:
    return [callback_from_dict(d) for d in json.loads(text or "[]")]


__all__ = ["CallbackDriver", "callback_from_dict", "callback_to_dict", "callbacks_from_json", "callbacks_to_json"]
