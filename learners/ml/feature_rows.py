"""Feature rows as bytes, so a featurised item is cached as one small blob.

Dense rows are float32 little-endian values. Sparse rows are the int32 column
indices followed by the float32 values (nnz = len(blob) / 8). Decoding a chunk
of rows joins the blobs once and reshapes, so it costs one copy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import sparse

_F32 = np.dtype("<f4")
_I32 = np.dtype("<i4")


def rows_encode(X: np.ndarray | sparse.csr_matrix) -> list[bytes]:
    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=np.float32)
        X.sort_indices()
        out = []
        for i in range(X.shape[0]):
            lo, hi = X.indptr[i], X.indptr[i + 1]
            out.append(X.indices[lo:hi].astype(_I32).tobytes() + X.data[lo:hi].astype(_F32).tobytes())
        return out
    X = np.ascontiguousarray(X, dtype=_F32)
    return [row.tobytes() for row in X]


def rows_decode(blobs: Sequence[bytes], *, dim: int, is_sparse: bool) -> np.ndarray | sparse.csr_matrix:
    if not is_sparse:
        if not blobs:
            return np.zeros((0, dim), dtype=np.float32)
        flat = np.frombuffer(b"".join(bytes(b) for b in blobs), dtype=_F32)
        if flat.size != len(blobs) * dim:
            raise ValueError(f"feature rows do not have {dim} values each; the cache is corrupt or stale")
        return flat.reshape(len(blobs), dim)
    indptr = np.zeros(len(blobs) + 1, dtype=np.int64)
    indices, data = [], []
    for i, blob in enumerate(blobs):
        blob = bytes(blob)
        nnz = len(blob) // 8
        indices.append(np.frombuffer(blob, dtype=_I32, count=nnz))
        data.append(np.frombuffer(blob, dtype=_F32, count=nnz, offset=4 * nnz))
        indptr[i + 1] = indptr[i] + nnz
    return sparse.csr_matrix(
        (np.concatenate(data) if data else np.zeros(0, _F32), np.concatenate(indices) if indices else np.zeros(0, _I32),
         indptr),
        shape=(len(blobs), dim),
    )
