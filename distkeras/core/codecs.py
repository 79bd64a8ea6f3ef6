"""Update codecs: how a worker's commit is compressed before it crosses the network.

A codec is a pair of pure functions around an explicit worker-side state::

    state = codec.init_state(size)
    encoded, state = codec.encode(vector, state)   # on the worker
    vector = codec.decode(encoded, size)           # on the server

``encoded`` is a dict of plain values and NumPy arrays (wire-ready). Only top-k keeps
state: its error-feedback residual, which stays on the worker (Stich et al., "Sparsified
SGD with Memory", NeurIPS 2018; Lin et al., "Deep Gradient Compression", ICLR 2018).
Codecs are by name: ``none``, ``fp16``, ``int8``, ``topk`` (``topk:0.01`` sets the fraction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

F32 = np.float32


class CodecError(ValueError):
    """An encoded update that does not decode to a vector of the expected size."""


class NoState(NamedTuple):
    pass


class ResidualState(NamedTuple):
    residual: np.ndarray


def encoded_nbytes(encoded: dict[str, Any]) -> int:
    """Bytes of array data in an encoded update (what the wire carries, headers aside)."""
    return sum(v.nbytes for v in encoded.values() if isinstance(v, np.ndarray))


@dataclass(frozen=True)
class Codec:
    name: ClassVar[str] = "base"

    def spec(self) -> str:
        return self.name

    def init_state(self, size: int) -> Any:
        return NoState()

    def encode(self, vector: np.ndarray, state: Any) -> tuple[dict[str, Any], Any]:
        raise NotImplementedError

    def decode(self, encoded: dict[str, Any], size: int) -> np.ndarray:
        raise NotImplementedError

    def _array(self, encoded: dict[str, Any], key: str, dtype: Any, length: int | None = None) -> np.ndarray:
        if not isinstance(encoded, dict) or encoded.get("codec") != self.name:
            got = encoded.get("codec") if isinstance(encoded, dict) else type(encoded).__name__
            raise CodecError(f"expected an update encoded with {self.name!r}, got {got!r}")
        a = encoded.get(key)
        if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.ndim != 1:
            raise CodecError(f"{self.name} update field {key!r} must be a 1-D {np.dtype(dtype).name} array")
        if length is not None and a.shape[0] != length:
            raise CodecError(f"{self.name} update field {key!r} has length {a.shape[0]}, expected {length}")
        return a


@dataclass(frozen=True)
class NoCodec(Codec):
    """Raw float32: 4 bytes per value."""

    name: ClassVar[str] = "none"

    def encode(self, vector, state):
        return {"codec": self.name, "values": np.ascontiguousarray(vector, dtype=F32)}, state

    def decode(self, encoded, size):
        return self._array(encoded, "values", F32, size)


@dataclass(frozen=True)
class Float16Codec(Codec):
    """IEEE half precision: 2 bytes per value (values beyond ±65504 saturate to ±inf and are
    then rejected by the server's finite check)."""

    name: ClassVar[str] = "fp16"

    def encode(self, vector, state):
        with np.errstate(over="ignore"):  # saturation to ±inf is documented and caught by the server
            values = np.asarray(vector, dtype=F32).astype(np.float16)
        return {"codec": self.name, "values": values}, state

    def decode(self, encoded, size):
        return self._array(encoded, "values", np.float16, size).astype(F32)


@dataclass(frozen=True)
class Int8Codec(Codec):
    """Linear 8-bit quantization with one float32 scale per chunk: q = round(v / s), s = max|v| / 127."""

    name: ClassVar[str] = "int8"
    chunk: int = 1024

    def __post_init__(self):
        if self.chunk < 1:
            raise ValueError(f"int8 chunk must be >= 1, got {self.chunk}")

    def encode(self, vector, state):
        v = np.asarray(vector, dtype=F32)
        n = v.shape[0]
        chunks = -(-n // self.chunk)
        padded = np.zeros(chunks * self.chunk, dtype=F32)
        padded[:n] = v
        blocks = padded.reshape(chunks, self.chunk)
        scales = (np.abs(blocks).max(axis=1) / F32(127.0)).astype(F32)
        safe = np.where(scales > 0, scales, F32(1.0))
        # a NaN/Inf input gives a NaN/Inf scale, so its whole chunk decodes non-finite
        # and the server rejects the commit (the codec never launders bad values)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.clip(np.rint(blocks / safe[:, None]), -127, 127).astype(np.int8)
        return {"codec": self.name, "q": q.reshape(-1)[:n], "scales": scales, "chunk": self.chunk}, state

    def decode(self, encoded, size):
        chunk = encoded.get("chunk") if isinstance(encoded, dict) else None
        if not isinstance(chunk, int) or chunk < 1:
            raise CodecError("int8 update needs a positive integer 'chunk'")
        q = self._array(encoded, "q", np.int8, size)
        scales = self._array(encoded, "scales", F32, -(-size // chunk))
        # chunk > size means one scale for everything: never repeat more than size values
        # (a forged chunk of 2**40 must not allocate terabytes)
        with np.errstate(invalid="ignore"):  # 0 · inf from a non-finite scale stays NaN (rejected later)
            return (q.astype(F32) * np.repeat(scales, min(chunk, max(size, 1)))[:size]).astype(F32)


@dataclass(frozen=True)
class TopKCodec(Codec):
    """Send the k = ⌈fraction · n⌉ largest-magnitude values (int32 index + float32 value).

    With error feedback the worker adds what it did not send last time to the next update:
    u' = u + r;  send top_k(u');  r ← u' − top_k(u').
    """

    name: ClassVar[str] = "topk"
    fraction: float = 0.01
    error_feedback: bool = True

    def __post_init__(self):
        if not (0.0 < self.fraction <= 1.0):
            raise ValueError(f"topk fraction must be in (0, 1], got {self.fraction}")

    def spec(self) -> str:
        return f"{self.name}:{self.fraction:g}"

    def init_state(self, size):
        return ResidualState(np.zeros(size, dtype=F32)) if self.error_feedback else NoState()

    def encode(self, vector, state):
        u = np.asarray(vector, dtype=F32)
        if self.error_feedback:
            u = u + state.residual
        n = u.shape[0]
        k = max(1, int(np.ceil(self.fraction * n))) if n else 0
        if k >= n:
            idx = np.arange(n, dtype=np.int32)
        else:
            idx = np.argpartition(np.abs(u), n - k)[n - k :].astype(np.int32)
            idx.sort()
        values = u[idx].astype(F32)
        if self.error_feedback:
            residual = u.copy()
            residual[idx] = 0.0
            state = ResidualState(residual)
        return {"codec": self.name, "indices": idx, "values": values}, state

    def decode(self, encoded, size):
        idx = self._array(encoded, "indices", np.int32)
        values = self._array(encoded, "values", F32, idx.shape[0])
        if idx.size and (idx.min() < 0 or idx.max() >= size):
            raise CodecError(f"topk indices must lie in [0, {size}), got [{idx.min()}, {idx.max()}]")
        out = np.zeros(size, dtype=F32)
        out[idx] = values
        return out


CODECS: dict[str, type[Codec]] = {c.name: c for c in (NoCodec, Float16Codec, Int8Codec, TopKCodec)}


def get_codec(spec: str | Codec | None) -> Codec:
    """``none`` | ``fp16`` | ``int8`` | ``int8:CHUNK`` | ``topk`` | ``topk:FRACTION`` (e.g. ``topk:0.01``)."""
    if spec is None:
        return NoCodec()
    if isinstance(spec, Codec):
        return spec
    name, _, arg = str(spec).strip().lower().partition(":")
    if name not in CODECS:
        raise ValueError(f"unknown codec {spec!r}; known codecs: {', '.join(CODECS)} (e.g. topk:0.01, int8:1024)")
    try:
        if name == "topk" and arg:
            return TopKCodec(fraction=float(arg))
        if name == "int8" and arg:
            return Int8Codec(chunk=int(arg))
    except ValueError as exc:
        raise ValueError(f"bad codec argument in {spec!r}: {exc}") from None
    if arg:
        raise ValueError(f"codec {name!r} takes no argument, got {spec!r}")
    return CODECS[name]()
