"""Turning items into embeddings fast: batched, decoded in workers, bfloat16 where the CPU has it, cached."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from . import distributed
from ._util import default_device, precision_dtype
from .backbones.base import Backbone
from .data.dataset import Dataset
from .data.unreadable import drop_failures
from .embedding_cache import EmbeddingCache
from .extraction_engines import extraction_model
from .modalities import get_modality
from .progress import progress_bar

log = logging.getLogger("headstart")

FOLD_MIN_ITEMS = 256  # below this, folding BatchNorm for a one-off extraction costs more than it saves


def inference_context(device: torch.device, precision: str = "auto"):
    """Autocast to bfloat16 (or fp16 on old GPUs) when `precision` allows and the device is fast at it."""
    dtype = precision_dtype(precision, device)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(batch: object, device: torch.device) -> object:
    if isinstance(batch, dict):
        return {k: v.to(device) for k, v in batch.items()}
    return batch.to(device)


def compute_embeddings(backbone: Backbone, items: Sequence, batch_size: int | None = None,
                       precision: str = "auto", device: torch.device | None = None, desc: str = "embedding",
                       model: nn.Module | None = None, ranks: int = 1) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Embeddings (float32, one row per item) and (index, reason) for items that could not be decoded.
    (`ranks`: `items` is this rank's share of a job that many torchrun ranks share, for the progress bar.)

    `model` is an inference copy of `backbone` made earlier (see `Backbone.inference_copy`) to reuse; without
    it one is made for this call, by the current extraction engine (`extraction_engines.using_engine`).
    """
    device = device or default_device()
    modality = get_modality(backbone.modality)
    batch_size = batch_size or modality.default_batch_size
    model = model or extraction_model(backbone, device, items, precision, fold=len(items) >= FOLD_MIN_ITEMS)
    out = np.zeros((len(items), backbone.embedding_dim), dtype=np.float32)
    failures: list[tuple[int, str]] = []
    with progress_bar(desc, total=len(items), unit=modality.unit, ranks=ranks) as advance, inference_context(device, precision), \
            torch.inference_mode():
        for batch, idx, failed in modality.extraction_batches(backbone, items, batch_size):
            out[idx] = model(_to_device(batch, device)).float().cpu().numpy()
            failures += failed
            advance(len(idx))
    return out, failures


def embed_items(backbone: Backbone, items: Sequence, cache: EmbeddingCache | None = None,
                precision: str = "auto", batch_size: int | None = None, desc: str = "embedding",
                model: nn.Module | None = None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Like `compute_embeddings`, but items already in `cache` are looked up instead of recomputed (`model`: an
    inference copy to compute the others with, as in `compute_embeddings`).

    Run by several processes (torchrun), each computes only its share of the items to compute (`shard`) and every
    process returns all of them: each item is embedded once, by one rank, and reaches the others through the
    shared cache (each rank stores its own items, so writers never share a key), or without a cache directly."""
    if cache is None:
        if distributed.world_size() == 1:
            return compute_embeddings(backbone, items, batch_size, precision, desc=desc, model=model)
        return _embed_shared(backbone, items, precision, batch_size, desc, model)
    modality = get_modality(backbone.modality)
    digests = [modality.digest(item) for item in items]
    out, found = cache.lookup(digests, backbone.embedding_dim)
    missing = np.flatnonzero(~found)
    if distributed.world_size() > 1:  # every rank looked before any stores; all compute what any one lacks
        missing = np.unique(np.concatenate(distributed.all_gather_object(missing)))
    mine = distributed.shard(missing)
    failures: list[tuple[int, str]] = []
    if len(mine):
        log.info("%s: %d of %d items not cached%s", desc, len(missing), len(items),
                 f" ({len(mine)} of them here, rank {distributed.rank()})" if len(mine) < len(missing) else "")
        device = default_device()
        model = model or extraction_model(backbone, device, [items[i] for i in mine[:8]], precision,
                                          fold=len(mine) >= FOLD_MIN_ITEMS)
        chunk = 4096  # extract and store in chunks: an interruption keeps what was done
        for start in range(0, len(mine), chunk):
            part = mine[start:start + chunk]
            ranks = distributed.world_size()  # rank 0's bar shows the whole job (progress_bar)
            emb, failed = compute_embeddings(backbone, [items[i] for i in part], batch_size, precision, device,
                                             desc=f"{desc} {start + len(part)}/{len(mine)}" if ranks == 1 else desc,
                                             model=model, ranks=ranks)
            bad = {i for i, _ in failed}
            good = [j for j in range(len(part)) if j not in bad]
            cache.store([digests[part[j]] for j in good], emb[good])
            out[part] = emb
            failures += [(int(part[i]), reason) for i, reason in failed]
    if distributed.world_size() > 1 and len(missing):
        failures = _rows_from_other_ranks(cache, digests, backbone.embedding_dim, missing, mine, out, failures)
    return out, failures


def _rows_from_other_ranks(cache: EmbeddingCache, digests: list[bytes], dim: int, missing: np.ndarray,
                           mine: np.ndarray, out: np.ndarray, failures: list[tuple[int, str]]
                           ) -> list[tuple[int, str]]:
    """Fill `out`'s rows of `missing` that other ranks computed, and return every rank's failures. The gather
    is the barrier: a rank sends its failures only after storing its rows, so once it returns every row is in
    the cache. Should a rank's cache be unwritable (a full disk) or a row be gone from it (a shard deleted
    meanwhile), the rows travel between the ranks directly instead."""
    shares = distributed.all_gather_object((cache.disabled, failures))
    failures = sorted(f for _, rank_failures in shares for f in rank_failures)
    failed = {i for i, _ in failures}
    theirs = np.array([i for i in np.setdiff1d(missing, mine) if i not in failed], dtype=np.int64)
    complete = not any(disabled for disabled, _ in shares)  # the same on every rank, as the choices below
    if complete:
        rows, found = cache.lookup([digests[i] for i in theirs], dim, count=False)
        out[theirs] = rows
        complete = all(distributed.all_gather_object(bool(found.all())))
    if not complete:
        _fill_from_ranks(out, mine)
    return failures


def _fill_from_ranks(out: np.ndarray, mine: np.ndarray) -> None:
    """Every rank sends the rows it computed (indices `mine`) to all the others."""
    for indices, rows in distributed.all_gather_object((mine, out[mine])):
        out[indices] = rows


def _embed_shared(backbone: Backbone, items: Sequence, precision: str, batch_size: int | None, desc: str,
                  model: nn.Module | None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Without a cache, on several ranks: each embeds its contiguous share, and all of them gather the rows."""
    start, stop = distributed.shard_bounds(len(items))
    out = np.zeros((len(items), backbone.embedding_dim), dtype=np.float32)
    mine = np.arange(start, stop)
    part, failed = compute_embeddings(backbone, [items[i] for i in mine], batch_size, precision, desc=desc, model=model,
                                      ranks=distributed.world_size())
    out[mine] = part
    shares = distributed.all_gather_object((mine, part, [(int(start + i), reason) for i, reason in failed]))
    for indices, rows, _ in shares:
        out[indices] = rows
    return out, sorted(f for _, _, rank_failures in shares for f in rank_failures)


def embed_dataset(backbone: Backbone, data: Dataset, cache: EmbeddingCache | None, precision: str,
                  strict: bool) -> tuple[Dataset, np.ndarray]:
    """The readable part of `data` and its embeddings (unreadable items warned about and left out)."""
    embeddings, failures = embed_items(backbone, data.items, cache, precision, desc=f"embedding {data.name}")
    keep = drop_failures(data, failures, strict)
    if len(keep) == len(data):
        return data, embeddings
    return data.subset(keep), embeddings[keep]
