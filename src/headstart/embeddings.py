"""Turning items into embeddings fast: batched, decoded in workers, bfloat16 where the CPU has it, cached."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ._util import default_device, precision_dtype
from .backbones.base import Backbone
from .data.dataset import Dataset
from .embedding_cache import EmbeddingCache
from .errors import DataError
from .modalities import get_modality
from .progress import progress_bar

log = logging.getLogger("headstart")

class ItemCollection(Protocol):
    """Named items of one modality: a Dataset, or pretraining's unlabeled data."""

    name: str
    modality: str
    items: Sequence

    def __len__(self) -> int: ...

    def subset(self, indices: np.ndarray): ...


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
                       model: nn.Module | None = None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Embeddings (float32, one row per item) and (index, reason) for items that could not be decoded.

    `model` is an inference copy of `backbone` made earlier (see `Backbone.inference_copy`) to reuse; without
    it one is made for this call.
    """
    device = device or default_device()
    modality = get_modality(backbone.modality)
    batch_size = batch_size or modality.default_batch_size
    model = model or backbone.inference_copy(device, fold=len(items) >= FOLD_MIN_ITEMS)
    out = np.zeros((len(items), backbone.embedding_dim), dtype=np.float32)
    failures: list[tuple[int, str]] = []
    with progress_bar(desc, total=len(items), unit=modality.unit) as advance, inference_context(device, precision), \
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
    inference copy to compute the others with, as in `compute_embeddings`)."""
    if cache is None:
        return compute_embeddings(backbone, items, batch_size, precision, desc=desc, model=model)
    modality = get_modality(backbone.modality)
    digests = [modality.digest(item) for item in items]
    out, found = cache.lookup(digests, backbone.embedding_dim)
    missing = np.flatnonzero(~found)
    failures: list[tuple[int, str]] = []
    if len(missing):
        log.info("%s: %d of %d items not cached", desc, len(missing), len(items))
        device = default_device()
        model = model or backbone.inference_copy(device, fold=len(missing) >= FOLD_MIN_ITEMS)
        chunk = 4096  # extract and store in chunks: an interruption keeps what was done
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            emb, failed = compute_embeddings(backbone, [items[i] for i in part], batch_size, precision, device,
                                             desc=f"{desc} {start + len(part)}/{len(missing)}", model=model)
            bad = {i for i, _ in failed}
            good = [j for j in range(len(part)) if j not in bad]
            cache.store([digests[part[j]] for j in good], emb[good])
            out[part] = emb
            failures += [(int(part[i]), reason) for i, reason in failed]
    return out, failures


def drop_failures(data: ItemCollection, failures: list[tuple[int, str]], strict: bool) -> np.ndarray:
    """Indices of `data` to keep after unreadable items: a warning with a count, or with `strict` an error."""
    if not failures:
        return np.arange(len(data))
    message = f"{data.name}: {get_modality(data.modality).failure_summary(data.items, failures)}"
    if strict:
        raise DataError(message + " (without --strict they are skipped)")
    log.warning(message)
    return np.setdiff1d(np.arange(len(data)), [i for i, _ in failures])


def embed_dataset(backbone: Backbone, data: Dataset, cache: EmbeddingCache | None, precision: str,
                  strict: bool) -> tuple[Dataset, np.ndarray]:
    """The readable part of `data` and its embeddings (unreadable items warned about and left out)."""
    embeddings, failures = embed_items(backbone, data.items, cache, precision, desc=f"embedding {data.name}")
    keep = drop_failures(data, failures, strict)
    if len(keep) == len(data):
        return data, embeddings
    return data.subset(keep), embeddings[keep]


def without_unreadable(data: ItemCollection, strict: bool) -> ItemCollection:
    """`data` less the items its modality cannot decode (checked by decoding each, in worker processes)."""
    failures = get_modality(data.modality).find_unreadable(data.items)
    return data.subset(drop_failures(data, failures, strict)) if failures else data
