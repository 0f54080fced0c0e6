"""Cosine similarity between many embeddings without an n x n matrix in memory: blocked matrix products.

One pass over the blocks gives both what `audit` needs (every pair above a similarity threshold: near duplicates)
and what `audit` and `suggest` rank items by (each item's k most similar others: outlier scores, TypiClust's
typicality). Hand-written because scikit-learn's NearestNeighbors answers one of the two questions per pass and
its radius search keeps every distance of a block's rows; a block of rows times all references is one BLAS call.
Measured on 50,000 items of 384 dimensions (loaded 2-core machine, duplicates and outliers together): 49 CPU
seconds with numpy's argpartition and comparisons (one thread), 30 with torch's (every core), 14 with torch on one
thread and the bfloat16 screen below (benchmarks/RESULTS.md, "Issue 24, speed").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

BLOCK_BYTES = 1 << 25  # 32 MiB of float32 similarities per block of query rows (larger blocks were no faster)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside (the probe's fits, the scan's blocks). Where other processes hold the cores,
    torch's threads wait for each other at every parallel region: measured on the shared 2-core Xeon at load 8-9,
    the label-error step on CIFAR-10's 5,100 x 1,280 took 69 s wall (27.8 CPU s) on torch's 2 threads and 7.8 s
    (3.8 CPU s) on one, and the scan of 50,000 x 384 items 61.5 s wall (24 CPU s) against 34.7 s (14 CPU s). On
    an idle machine a second thread would shorten the products by less than 2x; one thread never stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


# bfloat16 products screen the blocks where the CPU multiplies bfloat16 natively: unit vectors rounded to bfloat16
# (8 bits of mantissa) and a bfloat16 result are off by at most about 0.008 in cosine similarity, so every pair
# within SCREEN_MARGIN of the threshold, and the SCREEN_EXTRA next candidates beyond each row's k, are rescored
# exactly in float32; what `scan` returns is float32 similarities, as without the screen. Measured on 20,000 x 384
# (one thread, loaded shared Xeon with AMX): a block pass took 2.2 CPU s in bfloat16 against 4.9 in float32.
SCREEN_MARGIN = 0.02
SCREEN_EXTRA = 8


def screen_dtype() -> object:
    """torch.bfloat16 where the CPU has native bfloat16 products (AVX512-BF16, AMX), else None: no screen."""
    import torch

    from .._util import cpu_has_fast_bf16

    return torch.bfloat16 if cpu_has_fast_bf16() else None


RESCORE_FLOATS = 1 << 22  # float32 numbers gathered at a time to rescore candidates (16 MiB)


def rescored(queries: Any, references: Any, i: Any, j: Any) -> Any:
    """Exact float32 cosine similarity of each candidate pair (queries[i], references[j]), a bounded number of rows
    gathered at a time."""
    import torch

    step = max(1, RESCORE_FLOATS // max(1, queries.shape[1]))
    parts = [(queries[i[a:a + step]] * references[j[a:a + step]]).sum(dim=1) for a in range(0, len(i), step)]
    return torch.cat(parts) if parts else torch.zeros(0)


def scan(queries: np.ndarray, references: np.ndarray | None = None, threshold: float | None = None, k: int = 0,
         block_bytes: int = BLOCK_BYTES, screen: object = "auto") -> Scan:
    """Compare unit-length `queries` with unit-length `references` (None: the queries themselves, then an item is
    never its own neighbour and each pair is reported once, i < j), `block_bytes` of similarities at a time. Runs
    in torch on one thread (`one_thread`). `screen`: the dtype that screens the blocks ("auto":
    `screen_dtype()`; None: float32 throughout); the result is exact float32 either way."""
    import torch

    same = references is None
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    refs = q if same else torch.from_numpy(np.ascontiguousarray(references, dtype=np.float32))
    n, m = len(q), len(refs)
    k = max(0, min(k, m - 1 if same else m))
    dtype = screen_dtype() if screen == "auto" else screen
    coarse_q = q if dtype is None else q.to(dtype)
    coarse_refs = coarse_q if same else (refs if dtype is None else refs.to(dtype))
    margin = 0.0 if dtype is None else SCREEN_MARGIN
    wide = k if dtype is None else min(k + SCREEN_EXTRA, m - 1 if same else m)
    rows = max(1, block_bytes // (4 * max(m, 1)))
    found_pairs, found_sims = [], []
    neighbours = torch.zeros((n, k), dtype=torch.int64)
    neighbour_sims = torch.zeros((n, k), dtype=torch.float32)
    with torch.inference_mode(), one_thread():
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            sims = coarse_q[start:stop] @ coarse_refs.T
            if same:
                sims[torch.arange(stop - start), torch.arange(start, stop)] = -torch.inf
            if threshold is not None:
                i, j = torch.nonzero(sims >= threshold - margin, as_tuple=True)
                if same:
                    keep = j > i + start
                    i, j = i[keep], j[keep]
                hit, where = torch.unique(i, return_inverse=True)  # rows with a candidate: their exact products
                exact = (q[hit + start] @ refs.T)[where, j] if len(i) else torch.zeros(0)
                keep = exact >= threshold
                found_pairs.append(torch.stack([i[keep] + start, j[keep]], dim=1))
                found_sims.append(exact[keep])
            if k:
                top = torch.topk(sims, wide, dim=1).indices
                repeated = torch.arange(start, stop).repeat_interleave(wide)
                exact = rescored(q, refs, repeated, top.reshape(-1)).reshape(stop - start, wide)
                best, order = torch.topk(exact, k, dim=1)  # sorted, most similar first
                neighbours[start:stop], neighbour_sims[start:stop] = torch.gather(top, 1, order), best
    pairs = torch.cat(found_pairs).numpy() if found_pairs else np.zeros((0, 2), np.int64)
    pair_sims = torch.cat(found_sims).numpy() if found_sims else np.zeros(0, np.float32)
    return Scan(pairs.astype(np.int64), pair_sims.astype(np.float32), neighbours.numpy(), neighbour_sims.numpy())
