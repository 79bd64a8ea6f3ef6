"""The maths of every strategy as small free functions over NumPy vectors.

Every function is pure unless it is given ``out``: then it writes the result into
``out`` (which may be one of its inputs, for the server's in-place fast path) and
returns it. Inputs are never modified otherwise. All vectors are float32.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

F32 = np.float32


def delta(local: np.ndarray, pulled: np.ndarray) -> np.ndarray:
    """Δ = w − c_pulled: how far the worker moved since it last pulled."""
    return np.subtract(local, pulled, dtype=F32)


def scale(vector: np.ndarray, factor: float, out: np.ndarray | None = None) -> np.ndarray:
    """factor · v."""
    return np.multiply(vector, F32(factor), out=out, dtype=F32)


def add(center: np.ndarray, update: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """c + u (DOWNPOUR, ADAG, AEASGD server rule)."""
    return np.add(center, update, out=out, dtype=F32)


def add_scaled(center: np.ndarray, update: np.ndarray, factor: float, out: np.ndarray | None = None) -> np.ndarray:
    """c + factor · u (DynSGD: factor = 1 / (τ + 1))."""
    if factor == 1.0:
        return add(center, update, out=out)
    scaled = np.multiply(update, F32(factor), dtype=F32)
    return np.add(center, scaled, out=out, dtype=F32)


def elastic_difference(local: np.ndarray, center: np.ndarray, alpha: float) -> np.ndarray:
    """e = α (w − c): the elastic force between a worker and the center (EASGD family)."""
    e = np.subtract(local, center, dtype=F32)
    e *= F32(alpha)
    return e


def weighted_mean(vectors: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Σ_k a_k v_k / Σ_k a_k, accumulated in float64 for stability, returned as float32.

    With ``weights`` None every vector counts the same. Weights must be non-negative
    with a positive sum.
    """
    if len(vectors) == 0:
        raise ValueError("weighted_mean of no vectors")
    if weights is None:
        weights = [1.0] * len(vectors)
    weights = [float(a) for a in weights]
    if len(weights) != len(vectors):
        raise ValueError(f"{len(weights)} weights for {len(vectors)} vectors")
    if any(a < 0 for a in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    total = sum(weights)
    acc = np.zeros(np.shape(vectors[0]), dtype=np.float64)
    for a, v in zip(weights, vectors):
        if a:
            acc += (a / total) * np.asarray(v, dtype=np.float64)
    return acc.astype(F32)


def distance_scaled(
    center: np.ndarray,
    update: np.ndarray,
    center_at_pull: np.ndarray,
    learning_rate: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """c + u ⊙ 1 / (η⁻¹ (c − c_pulled)² + 1): the dist-keras "experimental" rule.

    Coordinates on which the center moved a lot since this worker pulled are damped.
    """
    drift = np.subtract(center, center_at_pull, dtype=F32)
    np.square(drift, out=drift)
    drift *= F32(1.0 / learning_rate)
    drift += F32(1.0)
    step = np.divide(update, drift, dtype=F32)
    return np.add(center, step, out=out, dtype=F32)


def nesterov_outer_step(
    center: np.ndarray,
    pseudo_gradient: np.ndarray,
    momentum_buffer: np.ndarray,
    learning_rate: float,
    momentum: float,
) -> tuple[np.ndarray, np.ndarray]:
    """DiLoCo's outer Nesterov step: b' = μ b + g;  c' = c − η_o (g + μ b'). Returns (c', b')."""
    buffer = np.multiply(momentum_buffer, F32(momentum), dtype=F32)
    buffer += pseudo_gradient
    step = np.multiply(buffer, F32(momentum), dtype=F32)
    step += pseudo_gradient
    step *= F32(learning_rate)
    return np.subtract(center, step, dtype=F32), buffer


_EXACT_BELOW = 1 << 14  # below this length the plain elementwise check is the faster one


def all_finite(vector: np.ndarray) -> bool:
    """True when no element is NaN or ±Inf. Exact; fast on the server's hot path.

    Fast path (long float vectors): ``s = Σ_i a_i b_i`` with ``a``, ``b`` the two halves of
    the vector, one BLAS dot that reads the halves as two parallel streams (about twice the
    speed of a sum or of ``dot(v, v)``, which are bound by one stream). Any NaN or ±Inf makes
    ``s`` non-finite: NaN · x = NaN, ±Inf · 0 = NaN, ±Inf · x = ±Inf, and a sum with a NaN
    or ±Inf term is NaN or ±Inf. A finite vector gives a finite ``s`` unless the products or
    their sum overflow; only a non-finite ``s`` pays the exact elementwise check, so the
    answer is always exact.
    """
    v = vector if isinstance(vector, np.ndarray) else np.asarray(vector)
    if v.dtype.kind not in "fc":
        return True  # integers and booleans are always finite
    if v.ndim != 1:
        v = v.reshape(-1)
    n = v.shape[0]
    if n < _EXACT_BELOW or v.dtype.char not in "fd":  # short, or not float32/float64
        return bool(np.logical_and.reduce(np.isfinite(v)))
    half = n // 2
    with np.errstate(over="ignore", invalid="ignore"):  # np.dot reports NaN/overflow as warnings
        fast = np.dot(v[:half], v[half : 2 * half])
    if np.isfinite(fast) and (n % 2 == 0 or np.isfinite(v[n - 1])):
        return True
    return bool(np.logical_and.reduce(np.isfinite(v)))
