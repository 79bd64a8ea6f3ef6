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
        def window(xs, ys):
            logs = model.train_step((xs[0], ys[0]))
            n = tf.shape(xs)[0]

            def cond(i, _logs):
                return i < n

            def body(i, _logs):
                return i + 1, model.train_step((xs[i], ys[i]))

            _, logs = tf.while_loop(cond, body, (tf.constant(1), logs))
            return logs

        self._fn = tf.function(window, jit_compile=bool(model.jit_compile), reduce_retracing=True)

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> dict[str, float]:
        self.model.reset_metrics()
        logs = self._fn(xs, ys)
        return {key: float(np.asarray(value)) for key, value in logs.items()}
