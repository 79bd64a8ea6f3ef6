"""JAX fast path: a window of training steps without a variable sync per step.

The generic path (``train_on_batch``) reads every variable into a state tuple, runs
one compiled step and writes every variable back, for each batch. Here the state is
read once per window, carried through the window's steps as JAX arrays by the
model's own stateless ``train_step`` (as ``fit`` does within an epoch, buffers
donated), and written back once at the end. Between windows the live model, the flat
vector and the optimizer state are exactly what the generic path would hold.

Steps are compiled in **chunks**: one compiled call runs up to :data:`CHUNK_STEPS`
consecutive steps, unrolled (what Keras's ``steps_per_execution`` does on JAX). A window
of ``n <= CHUNK_STEPS`` batches is one call; a longer one is calls of ``CHUNK_STEPS``
steps and its remainder one step a call, so a run compiles at most its window length,
the chunk and the single step. Measured choices (CPU, 2 cores):

* one call per step costs about 0.5-0.7 ms of dispatch on the calling thread for a
  94k-parameter MLP (``benchmarks/end_to_end.py``'s task), close to half of its 1.3-1.9 ms
  step; chunks of 5 steps trained it about 13% faster (86k against 76k samples/s, one
  process, medians of 3), and saved the same dispatch time in each of two workers sharing
  the cores;
* unrolled rather than ``jax.lax.scan``: a scanned window ran a small convnet about 12x
  slower than separate steps (1.5k against 19k samples/s) and the MLP no faster than the
  unrolled chunk; unrolling kept the convnet's speed (21.6k samples/s);
* the cost: compiling a chunk takes about its number of steps times one step's compile
  (0.6 s for the MLP's 5 steps, 3 s for the convnet's), once per process and window length,
  and JAX's persistent compilation cache (``distkeras.backends.startup``) keeps it across
  processes. ``CHUNK_STEPS`` bounds it.

The metric state starts from fresh reset values made by one compiled call, instead of
``model.reset_metrics()`` (one dispatch per metric variable).
"""

from __future__ import annotations

import numpy as np

from distkeras.backends.batches import map_structure, num_rows

#: the most training steps one compiled call runs (see the module docstring)
CHUNK_STEPS = 8


class JaxWindowRunner:
    name = "jax-steps"

    def __init__(self, model, chunk_steps: int = CHUNK_STEPS):
        import jax

        if chunk_steps < 1:
            raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps}")
        self._jax = jax
        self.model = model
        self.chunk_steps = int(chunk_steps)
        # (state, data) -> (logs, state), data a structure of (k, batch, ...) arrays; compiled
        # once per k (the leading dimension is static when it is traced)
        self._chunk = jax.jit(self._steps, donate_argnums=0)
        self._fresh_metrics = None  # compiled () -> reset metric state, built on first use

    def _steps(self, state, data):
        logs = None
        for i in range(self._jax.tree_util.tree_leaves(data)[0].shape[0]):
            logs, state = self.model.train_step(state, self._jax.tree_util.tree_map(lambda a: a[i], data))
        return logs, state

    def _groups(self):
        model = self.model
        return (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )

    def _reset_metric_state(self, metric_vars):
        if self._fresh_metrics is None:
            self.model.reset_metrics()
            reset_values = [np.asarray(v.value) for v in metric_vars]
            # New output buffers on every call: safe to donate to the first step.
            self._fresh_metrics = self._jax.jit(lambda: [self._jax.numpy.asarray(v) for v in reset_values])
        return self._fresh_metrics()

    def chunks(self, n: int) -> list[tuple[int, int]]:
        """``(start, steps)`` of the compiled calls that train a window of ``n`` batches."""
        if n <= self.chunk_steps:
            return [(0, n)]
        full = n - n % self.chunk_steps
        return [(i, self.chunk_steps) for i in range(0, full, self.chunk_steps)] + [(i, 1) for i in range(full, n)]

    def __call__(self, xs, ys, ws=None) -> dict[str, float]:
        """``xs``/``ys``: ``(n_batches, batch, ...)`` arrays, or lists/dicts of them (several
        inputs/outputs); ``ws``: optional ``(n_batches, batch)`` sample weights."""
        trainable, non_trainable, optimizer_vars, metric_vars = groups = self._groups()
        state = (
            [v.value for v in trainable],
            [v.value for v in non_trainable],
            [v.value for v in optimizer_vars],
            self._reset_metric_state(metric_vars),
        )
        data = (xs, ys) if ws is None else (xs, ys, ws)
        logs = None
        for start, steps in self.chunks(num_rows(xs)):
            chunk = tuple(map_structure(lambda a: a[start : start + steps], part) for part in data)
            logs, state = self._chunk(state, chunk)
        for group, values in zip(groups, state):
            for variable, value in zip(group, values):
                variable.assign(value)
        # Metrics accumulate over the window (reset before it): the last step's values
        # are the window's averages.
        return {key: float(np.asarray(value)) for key, value in logs.items()}
