"""Cosine similarity between many embeddings without an n x n matrix in memory: blocked matrix products.

One pass over the blocks gives both what `audit` needs (every pair above a similarity threshold: near duplicates)
and what `audit` and `suggest` rank items by (each item's k most similar others: outlier scores, TypiClust's
typicality). Hand-written because scikit-learn's NearestNeighbors answers one of the two questions per pass and
its radius search keeps every distance of a block's rows; a block of rows times all references is one BLAS call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_BYTES = 1 << 27  # 128 MiB of float32 similarities per block of query rows


def unit_rows(x: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Rows of `x` (less `center`, when given) scaled to length 1, as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    if center is not None:
        x = x - center.astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class Scan:
    """What one blocked pass found: pairs (query i, reference j, cosine similarity) at or above the threshold,
    and each query's `k` most similar references (indices and similarities, most similar first)."""

    pairs: np.ndarray  # (m, 2) int64
    pair_similarity: np.ndarray  # (m,) float32
    neighbours: np.ndarray  # (n, k) int64
    neighbour_similarity: np.ndarray  # (n, k) float32


def scan(queries: np.ndarray, references: np.ndarray | None = None, threshold: float | None = None, k: int = 0,
         block_bytes: int = BLOCK_BYTES) -> Scan:
    """Compare unit-length `queries` with unit-length `references` (None: the queries themselves, then an item is
    never its own neighbour and each pair is reported once, i < j), `block_bytes` of similarities at a time."""
    same = references is None
    refs = queries if same else references
    n, m = len(queries), len(refs)
    k = max(0, min(k, m - 1 if same else m))
    rows = max(1, block_bytes // (4 * max(m, 1)))
    found_pairs, found_sims = [], []
    neighbours = np.zeros((n, k), dtype=np.int64)
    neighbour_sims = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        sims = queries[start:stop] @ refs.T
        if same:
            sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        if threshold is not None:
            i, j = np.nonzero(sims >= threshold)
            keep = j > i + start if same else slice(None)
            i, j = i[keep], j[keep]
            found_pairs.append(np.stack([i + start, j], axis=1))
            found_sims.append(sims[i, j])
        if k:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_sims, axis=1, kind="stable")
            neighbours[start:stop] = np.take_along_axis(top, order, axis=1)
            neighbour_sims[start:stop] = np.take_along_axis(top_sims, order, axis=1)
    pairs = np.concatenate(found_pairs) if found_pairs else np.zeros((0, 2), np.int64)
    pair_sims = np.concatenate(found_sims).astype(np.float32) if found_sims else np.zeros(0, np.float32)
    return Scan(pairs.astype(np.int64), pair_sims, neighbours, neighbour_sims)
