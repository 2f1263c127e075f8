"""Synthetic sentence-embedding-like vectors: unit-norm float32 rows from a Gaussian mixture (no Django).

MiniLM gives 384-d unit vectors whose topics form loose clusters around a
shared mean direction (two unrelated sentences still have cosine ~0.1-0.2).
The mixture imitates that shape: component k has centre
`normalise(shared + SPREAD * spread_k)`, a row is `normalise(centre_k + noise)`:
same-component rows have cosine ~0.28, rows of different components ~0.25,
and logistic regression on 500 labels reaches a cross-validated accuracy of
about 0.85 (not a trivially separable 1.0, so margins are spread out).
Rows are generated chunk by chunk from a seed, so any chunk can be rebuilt
without holding the 1M x 384 matrix (1.5 GB) in memory.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

DIM = 384
COMPONENTS = 5
# Unequal class sizes, like a real label set; the rarest still gets ~50 of 500 seed labels.
WEIGHTS = np.array([0.30, 0.25, 0.20, 0.15, 0.10])
SPREAD = 0.3  # how far the components' centres sit from the shared direction
NOISE = 0.085  # per-coordinate noise
CHUNK = 50_000


def mixture_centres(seed: int) -> np.ndarray:
    """(COMPONENTS, DIM) unit centres around one shared direction."""
    rng = np.random.default_rng([seed, 0])
    shared = rng.standard_normal(DIM)
    shared /= np.linalg.norm(shared)
    spread = rng.standard_normal((COMPONENTS, DIM))
    spread /= np.linalg.norm(spread, axis=1, keepdims=True)
    centres = shared + SPREAD * spread
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def mixture_components(n: int, seed: int) -> np.ndarray:
    """The mixture component (0..COMPONENTS-1) of each of `n` rows, as int8."""
    return np.random.default_rng([seed, 1]).choice(COMPONENTS, size=n, p=WEIGHTS).astype(np.int8)


def mixture_chunks(n: int, seed: int, chunk: int = CHUNK) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, components, float32 unit rows) for rows 0..n-1, `chunk` rows at a time."""
    centres = mixture_centres(seed)
    components = mixture_components(n, seed)
    for number, start in enumerate(range(0, n, chunk)):
        which = components[start:start + chunk]
        rng = np.random.default_rng([seed, 2, number])
        rows = centres[which] + NOISE * rng.standard_normal((len(which), DIM))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield start, which, rows.astype(np.float32)
