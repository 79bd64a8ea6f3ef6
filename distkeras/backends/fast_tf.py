"""TensorFlow fast path: one ``tf.function`` runs all the steps of a window.

The model's own ``train_step`` (stateful on TensorFlow) runs in a ``tf.while_loop``
over the stacked batches, with the model's ``jit_compile`` setting, so a window costs
one function call instead of one per batch. The first step is peeled off the loop so
that the loop carries the metrics dict.
"""

from __future__ import annotations

import numpy as np


class TFWindowRunner:
    name = "tf-while"

    def __init__(self, model):
        import tensorflow as tf

        self.model = model

        @tf.autograph.experimental.do_not_convert
        def window(xs, ys, ws=None):
            # xs/ys: stacked batches, or lists/dicts of them (several inputs/outputs)
            def data(i):
                d = (tf.nest.map_structure(lambda a: a[i], xs), tf.nest.map_structure(lambda a: a[i], ys))
                return d if ws is None else d + (ws[i],)

            logs = model.train_step(data(0))
            n = tf.shape(tf.nest.flatten(xs)[0])[0]

            def cond(i, _logs):
                return i < n

            def body(i, _logs):
                return i + 1, model.train_step(data(i))

            _, logs = tf.while_loop(cond, body, (tf.constant(1), logs))
            return logs

        self._fn = tf.function(window, jit_compile=bool(model.jit_compile), reduce_retracing=True)

    def __call__(self, xs, ys, ws=None) -> dict[str, float]:
        self.model.reset_metrics()
        logs = self._fn(xs, ys) if ws is None else self._fn(xs, ys, ws)
        return {key: float(np.asarray(value)) for key, value in logs.items()}
