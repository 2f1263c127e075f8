"""What moves between a site and the coordinator: named arrays, an example count and metrics.

An update carries the *change* a site made to the global weights (local minus
global), not the weights themselves: robust rules, clipping and compression all
act on changes, and a change of zero is a site that learned nothing.

Arrays are kept as an ordered dict of name -> float32 ndarray, the names being
the model's parameter names (``"linear.weight"``), which is what the payload
audit checks against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

Arrays = dict[str, np.ndarray]


class ArraysMismatch(ValueError):
    """Two sets of arrays that should have the same names and shapes do not."""


@dataclass
class Update:
    """One site's contribution to a round.

    Attributes
    ----------
    arrays : dict of str to ndarray
        The weight change, local minus global, with the model's parameter names.
    num_examples : int
        Labelled examples the site trained on (FedAvg's weight).
    metrics : dict of str to float
        The site's own numbers (training loss, local accuracy); never rows or labels.
    site : str
        The sender, filled in by the coordinator's side of the backend.
    base_version : int
        The global model version the site started from; its staleness under
        asynchronous aggregation is the current version minus this.
    """

    arrays: Arrays
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    site: str = ""
    base_version: int = 0


def arrays_copy(arrays: Mapping[str, np.ndarray]) -> Arrays:
    return {name: np.array(value, dtype=np.float32, copy=True) for name, value in arrays.items()}


def arrays_zeros_like(arrays: Mapping[str, np.ndarray]) -> Arrays:
    return {name: np.zeros_like(value, dtype=np.float32) for name, value in arrays.items()}


def arrays_check_like(reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], *, what: str) -> None:
    """Raise `ArraysMismatch` naming the first difference in names or shapes."""
    if list(reference) != list(other):
        raise ArraysMismatch(f"{what}: arrays {list(other)} do not match the model's {list(reference)}")
    for name, value in reference.items():
        if np.shape(other[name]) != np.shape(value):
            raise ArraysMismatch(f"{what}: array {name!r} has shape {np.shape(other[name])}, expected {np.shape(value)}")


def arrays_add(weights: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray], scale: float = 1.0) -> Arrays:
    """weights + scale * delta, name by name."""
    return {name: (weights[name] + np.float32(scale) * delta[name]).astype(np.float32) for name in weights}


def arrays_flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """All arrays as one float32 vector, in name order of the mapping."""
    if not arrays:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.ravel(value).astype(np.float32, copy=False) for value in arrays.values()])


def arrays_unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> Arrays:
    """The inverse of `arrays_flatten`, shaped like `like`."""
    out: Arrays = {}
    offset = 0
    for name, value in like.items():
        size = int(np.size(value))
        out[name] = np.asarray(vector[offset:offset + size], dtype=np.float32).reshape(np.shape(value))
        offset += size
    if offset != vector.size:
        raise ArraysMismatch(f"vector of {vector.size} values does not fill arrays of {offset}")
    return out


def arrays_norm(arrays: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all arrays taken together."""
    return float(np.sqrt(sum(float(np.sum(np.square(value, dtype=np.float64))) for value in arrays.values())))


def arrays_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.asarray(value).nbytes for value in arrays.values()))


def updates_stack(updates: Iterable[Update]) -> tuple[np.ndarray, np.ndarray]:
    """(matrix of flattened deltas, one row per update; vector of example counts)."""
    rows, counts = [], []
    for update in updates:
        rows.append(arrays_flatten(update.arrays))
        counts.append(update.num_examples)
    if not rows:
        raise ValueError("no updates to aggregate")
    return np.stack(rows), np.asarray(counts, dtype=np.float64)
