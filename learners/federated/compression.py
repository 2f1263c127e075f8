"""Optional compression of updates on the wire: 8-bit linear quantisation per array.

Each array is sent as uint8 codes plus its minimum and step (``scale``) as two
float32 numbers, 8 bytes of header per array: about 4x fewer bytes than float32.
Names and shapes are the model's, known to both ends, and are counted in
neither size. Stochastic rounding makes the decoded change unbiased, so
quantisation noise averages out over sites and rounds instead of drifting.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from learners.federated.updates import Arrays, arrays_copy, arrays_nbytes

#: minimum and scale, one float32 each.
HEADER_BYTES_PER_ARRAY = 8
LEVELS = 255


class CompressionError(ValueError):
    """Arrays that cannot be compressed as asked, or a payload that is not what the compressor makes."""


class UnknownCompressor(ValueError):
    """A compressor name that is not in the registry."""


@dataclass
class QuantizedArrays:
    """8-bit codes per array; value = minimum + code * scale.

    Attributes
    ----------
    codes : dict of str to ndarray
        uint8 arrays with the original shapes.
    minimum, scale : dict of str to float32
        Per array; scale is 0 for a constant array.
    """

    codes: dict[str, np.ndarray]
    minimum: dict[str, np.float32]
    scale: dict[str, np.float32]

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: the codes plus 8 bytes of header per array."""
        return int(sum(code.nbytes for code in self.codes.values())) + HEADER_BYTES_PER_ARRAY * len(self.codes)


def quantize_8bit(
    arrays: Mapping[str, np.ndarray], *, stochastic: bool = False, rng: np.random.Generator | None = None
) -> QuantizedArrays:
    """Linear 8-bit quantisation of each array over its own [min, max].

    Parameters
    ----------
    arrays : dict of str to ndarray
        Finite float arrays.
    stochastic : bool
        Round up with probability equal to the fractional part, so that the
        decoded value equals the input in expectation. Deterministic rounding
        (the default) errs by at most scale / 2 per value instead, but with a bias.
    rng : numpy Generator
        Required when `stochastic`; pass a seeded one for reproducible payloads.

    Raises
    ------
    CompressionError
        A non-finite value, or stochastic rounding without an rng.
    """
    if stochastic and rng is None:
        raise CompressionError("int8: stochastic rounding needs an rng, e.g. np.random.default_rng(seed)")
    codes: dict[str, np.ndarray] = {}
    minimum: dict[str, np.float32] = {}
    scale: dict[str, np.float32] = {}
    for name, value in arrays.items():
        values = np.asarray(value, dtype=np.float32)
        if values.size == 0:
            codes[name], minimum[name], scale[name] = np.zeros(values.shape, np.uint8), np.float32(0), np.float32(0)
            continue
        if not np.all(np.isfinite(values)):
            raise CompressionError(f"int8: array {name!r} holds non-finite values; they cannot be quantised")
        low = np.float32(values.min())
        # Codes are computed against the float32 minimum and scale that are sent, so the error bound holds for them.
        step = np.float32((float(values.max()) - float(low)) / LEVELS)
        minimum[name], scale[name] = low, step
        if step == 0:
            codes[name] = np.zeros(values.shape, dtype=np.uint8)
            continue
        position = (values.astype(np.float64) - float(low)) / float(step)
        if stochastic:
            assert rng is not None
            rounded = np.floor(position + rng.random(values.shape))
        else:
            rounded = np.rint(position)
        codes[name] = np.clip(rounded, 0, LEVELS).astype(np.uint8)
    return QuantizedArrays(codes, minimum, scale)


def dequantize(quantized: QuantizedArrays) -> Arrays:
    """The float32 arrays the codes stand for: minimum + code * scale."""
    return {
        name: (float(quantized.minimum[name]) + code.astype(np.float64) * float(quantized.scale[name])).astype(np.float32)
        for name, code in quantized.codes.items()
    }


def compression_error(
    arrays: Mapping[str, np.ndarray], *, stochastic: bool = False, rng: np.random.Generator | None = None
) -> dict[str, float]:
    """How much 8-bit quantisation of `arrays` loses and saves.

    Returns
    -------
    dict
        ``relative_l2``: ||x - x'|| / ||x|| over all arrays (0 when x is all zeros);
        ``max_abs``: the largest absolute error of any value;
        ``byte_ratio``: float32 bytes / quantised bytes, header included.
    """
    quantized = quantize_8bit(arrays, stochastic=stochastic, rng=rng)
    decoded = dequantize(quantized)
    squared_error, squared_norm, max_abs = 0.0, 0.0, 0.0
    for name, value in arrays.items():
        original = np.asarray(value, dtype=np.float64)
        error = decoded[name].astype(np.float64) - original
        squared_error += float(np.sum(np.square(error)))
        squared_norm += float(np.sum(np.square(original)))
        if error.size:
            max_abs = max(max_abs, float(np.max(np.abs(error))))
    original_bytes = sum(np.asarray(value).size * 4 for value in arrays.values())
    return {
        "relative_l2": float(np.sqrt(squared_error / squared_norm)) if squared_norm > 0 else 0.0,
        "max_abs": max_abs,
        "byte_ratio": original_bytes / quantized.nbytes if quantized.nbytes else 1.0,
    }


Payload = Arrays | QuantizedArrays


class Compressor(ABC):
    """How an update's arrays travel: `compress` at the site, `decompress` at the coordinator."""

    name: ClassVar[str]

    @abstractmethod
    def compress(self, arrays: Mapping[str, np.ndarray], rng: np.random.Generator | None = None) -> Payload:
        """The payload to send for `arrays`."""

    @abstractmethod
    def decompress(self, payload: Payload) -> Arrays:
        """The float32 arrays a payload stands for."""

    @abstractmethod
    def payload_nbytes(self, payload: Payload) -> int:
        """Bytes the payload takes on the wire (names and shapes not counted)."""


class NoCompression(Compressor):
    """Send float32 arrays as they are."""

    name: ClassVar[str] = "none"

    def compress(self, arrays: Mapping[str, np.ndarray], rng: np.random.Generator | None = None) -> Payload:
        return arrays_copy(arrays)

    def decompress(self, payload: Payload) -> Arrays:
        if isinstance(payload, QuantizedArrays):
            raise CompressionError("none: got an int8 payload; decompress it with the 'int8' compressor")
        return arrays_copy(payload)

    def payload_nbytes(self, payload: Payload) -> int:
        if isinstance(payload, QuantizedArrays):
            return payload.nbytes
        return arrays_nbytes(payload)


class Int8Compression(Compressor):
    """8-bit linear quantisation per array (`quantize_8bit`).

    Parameters
    ----------
    stochastic : bool
        Unbiased stochastic rounding (default), which then needs an rng in `compress`.
    """

    name: ClassVar[str] = "int8"

    def __init__(self, stochastic: bool = True) -> None:
        self.stochastic = bool(stochastic)

    def compress(self, arrays: Mapping[str, np.ndarray], rng: np.random.Generator | None = None) -> Payload:
        return quantize_8bit(arrays, stochastic=self.stochastic, rng=rng)

    def decompress(self, payload: Payload) -> Arrays:
        if not isinstance(payload, QuantizedArrays):
            raise CompressionError(f"int8: expected a QuantizedArrays payload, got {type(payload).__name__}")
        return dequantize(payload)

    def payload_nbytes(self, payload: Payload) -> int:
        if not isinstance(payload, QuantizedArrays):
            raise CompressionError(f"int8: expected a QuantizedArrays payload, got {type(payload).__name__}")
        return payload.nbytes


COMPRESSORS: dict[str, type[Compressor]] = {cls.name: cls for cls in (NoCompression, Int8Compression)}


def compressor_create(name: str, **params: Any) -> Compressor:
    """The registered compressor `name`, built with `params`.

    Raises
    ------
    UnknownCompressor
        `name` is not registered.
    """
    try:
        cls = COMPRESSORS[name]
    except KeyError:
        raise UnknownCompressor(f"unknown compressor {name!r}; choose one of {sorted(COMPRESSORS)}") from None
    return cls(**params)
