"""The one byte format for everything that crosses a site boundary, and the audit of it.

A message is a kind, a small JSON header of scalars (``meta``) and named arrays.
Encoding is explicit (a JSON header followed by raw little-endian array bytes)
so that nothing but numbers can travel: no pickle, no object graphs, and the
audit can list exactly which arrays of which shapes went where.

Every backend passes each message through a `PayloadAudit` on the
coordinator's side of the boundary (outgoing and incoming), so the record of a
run is the complete list of what crossed.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

MAGIC = b"WBFED1"
ALLOWED_DTYPES = {"float32", "float64", "uint8", "uint32", "int64"}


class WireError(ValueError):
    """Bytes that are not a well-formed message, or a message that cannot be encoded."""


@dataclass
class Message:
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _json_safe(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _json_safe(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise WireError(f"{where}: key {key!r} is not a string")
            _json_safe(item, f"{where}.{key}")
        return
    raise WireError(f"{where}: {type(value).__name__} cannot be sent; only numbers, strings, lists and dicts")


def message_encode(message: Message) -> bytes:
    _json_safe(message.meta, "meta")
    arrays_header, chunks, offset = [], [], 0
    for name, value in message.arrays.items():
        array = np.ascontiguousarray(value)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype.name not in ALLOWED_DTYPES:
            raise WireError(f"array {name!r} has dtype {array.dtype}; allowed: {sorted(ALLOWED_DTYPES)}")
        data = array.astype(dtype.newbyteorder("<"), copy=False).tobytes()
        arrays_header.append({"name": name, "dtype": dtype.name, "shape": list(array.shape), "offset": offset,
                              "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
    header = json.dumps({"kind": message.kind, "meta": message.meta, "arrays": arrays_header},
                        separators=(",", ":"), allow_nan=False).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *chunks])


def _header(data: bytes) -> tuple[dict, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:len(MAGIC)]) != MAGIC:
        raise WireError("not a federation message (bad magic)")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(bytes(data[start:start + length]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"message header is not JSON: {exc}") from None
    return header, start + length


def message_decode(data: bytes) -> Message:
    header, body = _header(data)
    arrays = {}
    for entry in header["arrays"]:
        if entry["dtype"] not in ALLOWED_DTYPES:
            raise WireError(f"array {entry['name']!r} has dtype {entry['dtype']}; allowed: {sorted(ALLOWED_DTYPES)}")
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        start = body + entry["offset"]
        raw = data[start:start + entry["nbytes"]]
        if len(raw) != entry["nbytes"]:
            raise WireError(f"array {entry['name']!r} is truncated")
        arrays[entry["name"]] = np.frombuffer(raw, dtype=dtype).reshape(entry["shape"]).astype(dtype.newbyteorder("="))
    return Message(kind=header["kind"], meta=header["meta"], arrays=arrays)


@dataclass(frozen=True)
class PayloadRecord:
    """One message that crossed a boundary, as the audit saw it."""

    direction: str  # "out": coordinator (or region) to site; "in": towards the coordinator
    site: str
    kind: str
    nbytes: int
    arrays: dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape)
    meta: dict[str, Any]
    round: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "site": self.site, "kind": self.kind, "nbytes": self.nbytes,
                "arrays": {k: [d, list(s)] for k, (d, s) in self.arrays.items()}, "meta": self.meta,
                "round": self.round}


class PayloadAudit:
    """Every message across a site boundary: direction, site, size, array names and shapes, header."""

    def __init__(self) -> None:
        self.records: list[PayloadRecord] = []

    def record(self, direction: str, site: str, data: bytes, *, round: int | None = None) -> PayloadRecord:
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        header, _ = _header(data)
        entry = PayloadRecord(
            direction=direction, site=site, kind=header["kind"], nbytes=len(data),
            arrays={a["name"]: (a["dtype"], tuple(a["shape"])) for a in header["arrays"]},
            meta=header["meta"], round=round,
        )
        self.records.append(entry)
        return entry

    def bytes(self, direction: str, *, round: int | None = None, sites: Iterable[str] | None = None) -> int:
        chosen = set(sites) if sites is not None else None
        return sum(r.nbytes for r in self.records if r.direction == direction
                   and (round is None or r.round == round) and (chosen is None or r.site in chosen))


def meta_keys(meta: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Every key path in a header, dotted ("config.lr"), for checking against an allow-list."""
    keys = set()
    for key, value in meta.items():
        path = f"{prefix}{key}"
        keys.add(path)
        if isinstance(value, dict):
            keys |= meta_keys(value, prefix=f"{path}.")
    return keys


def arrays_to_wire(compression: str, arrays: Mapping[str, np.ndarray], rng: np.random.Generator | None,
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """An update's arrays as message arrays plus the header entry that says how to read them back."""
    from learners.federated.compression import QuantizedArrays, compressor_create

    payload = compressor_create(compression).compress(arrays, rng)
    if isinstance(payload, QuantizedArrays):
        return dict(payload.codes), {"name": compression,
                                     "minimum": {k: float(v) for k, v in payload.minimum.items()},
                                     "scale": {k: float(v) for k, v in payload.scale.items()}}
    return dict(payload), {"name": compression}


def arrays_from_wire(arrays: Mapping[str, np.ndarray], compression: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The float32 arrays that `arrays_to_wire` sent."""
    from learners.federated.compression import QuantizedArrays, compressor_create

    name = compression.get("name", "none")
    compressor = compressor_create(name)
    if name == "none":
        return compressor.decompress(dict(arrays))
    try:
        payload = QuantizedArrays(
            codes=dict(arrays),
            minimum={k: np.float32(compression["minimum"][k]) for k in arrays},
            scale={k: np.float32(compression["scale"][k]) for k in arrays},
        )
    except (KeyError, TypeError) as exc:
        raise WireError(f"{name} payload without its minimum/scale for {exc}") from None
    return compressor.decompress(payload)
