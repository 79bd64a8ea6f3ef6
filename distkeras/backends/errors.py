"""Errors raised by the Keras adapters (importing this module never imports Keras)."""

from __future__ import annotations

from distkeras.core.flat import LayoutError

__all__ = ["BackendError", "ModelNotBuiltError", "SpecError", "LayoutError"]


class BackendError(RuntimeError):
    """The requested Keras backend cannot be used in this process."""


class ModelNotBuiltError(ValueError):
    """The model has no weights yet (no input shape), so it has no flat layout."""


class SpecError(ValueError):
    """A :class:`~distkeras.backends.ModelSpec` cannot be built, serialized or loaded."""
