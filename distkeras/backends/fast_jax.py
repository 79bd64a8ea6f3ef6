"""JAX fast path: a whole window of training steps in one compiled call.

``jax.lax.scan`` runs the model's own stateless ``train_step`` over the stacked
batches of a window, so the step is traced once (whatever the window length) and
compiled once per (window length, batch shape). The model's variables are read
before and written back after each window, so between windows the live model, the
flat vector and the optimizer state are exactly what the generic path would hold.
"""

from __future__ import annotations

import numpy as np


class JaxWindowRunner:
    name = "jax-scan"

    def __init__(self, model):
        import jax

        self.model = model

        def window(state, xs, ys):
            def body(carry, batch):
                logs, carry = model.train_step(carry, batch)
                return carry, logs

            state, logs = jax.lax.scan(body, state, (xs, ys))
            # Metrics accumulate over the window (they are reset before it): the last
            # step's values are the window's averages.
            logs = jax.tree_util.tree_map(lambda v: v[-1], logs)
            return logs, state

        # No buffer donation: the variables keep valid values if a window fails.
        self._fn = jax.jit(window)

    def _groups(self):
        model = self.model
        return (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> dict[str, float]:
        self.model.reset_metrics()
        groups = self._groups()
        state = tuple([v.value for v in group] for group in groups)
        logs, state = self._fn(state, xs, ys)
        for group, values in zip(groups, state):
            for variable, value in zip(group, values):
                variable.assign(value)
        return {key: float(np.asarray(value)) for key, value in logs.items()}
