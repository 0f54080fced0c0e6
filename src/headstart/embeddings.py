"""Turning items into embeddings fast: batched, decoded in workers, bfloat16 where the CPU has it, cached."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import torch

from ._util import autocast_dtype, default_device, worker_count
from .backbones.base import Backbone, ImageBackbone, TextBackbone
from .backbones.folding import folded_copy
from .data.images import ImageTensors, describe, item_digest
from .embedding_cache import EmbeddingCache
from .progress import progress_bar

log = logging.getLogger(__name__)


def inference_context(device: torch.device, precision: str = "auto"):
    """Autocast to bfloat16 (or fp16 on old GPUs) when `precision` allows and the device is fast at it."""
    dtype = {"auto": autocast_dtype(device), "fp32": None, "bf16": torch.bfloat16}[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_batch_size(backbone: Backbone) -> int:
    return 64 if isinstance(backbone, ImageBackbone) else 128


FOLD_MIN_ITEMS = 256  # below this, folding BatchNorm costs more than it saves


def inference_model(backbone: Backbone, n_items: int, device: torch.device) -> Backbone:
    """The module to run extraction with: `backbone` itself, or for many images a copy with BatchNorm folded.

    `backbone` is put in eval mode on `device` (channels_last for images) either way; the folded copy shares
    nothing with it, so a backbone about to be fine-tuned is unaffected. Runs outside inference mode: moved or
    re-laid-out parameters must stay usable for training afterwards.
    """
    backbone.eval().to(device)
    if not isinstance(backbone, ImageBackbone):
        return backbone
    backbone.to(memory_format=torch.channels_last)
    if n_items < FOLD_MIN_ITEMS:
        return backbone
    example = torch.randn(2, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    model = folded_copy(backbone, example.to(device, memory_format=torch.channels_last))
    return model if model is backbone else model.to(memory_format=torch.channels_last)


def _image_batches(backbone: ImageBackbone, items: Sequence, batch_size: int
                   ) -> Iterator[tuple[object, np.ndarray, list[tuple[int, str]]]]:
    dataset = ImageTensors(items, backbone.transform(train=False), draft_size=backbone.draft_size(),
                           fallback_shape=(3, backbone.image_size, backbone.image_size))
    workers = worker_count()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    for x, _, idx, errors in loader:
        failed = [(int(i), e) for i, e in zip(idx, errors) if e]
        yield x.contiguous(memory_format=torch.channels_last), idx.numpy(), failed


def _text_batches(backbone: TextBackbone, texts: Sequence[str], batch_size: int
                  ) -> Iterator[tuple[object, np.ndarray, list[tuple[int, str]]]]:
    """Batches of texts of similar token length, so little compute goes to padding."""
    order = np.argsort(backbone.token_lengths(texts), kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield backbone.collate([texts[i] for i in idx]), idx, []


def _to_device(batch: object, device: torch.device) -> object:
    if isinstance(batch, dict):
        return {k: v.to(device) for k, v in batch.items()}
    return batch.to(device)


def compute_embeddings(backbone: Backbone, items: Sequence, batch_size: int | None = None,
                       precision: str = "auto", device: torch.device | None = None, desc: str = "embedding"
                       ) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Embeddings (float32, one row per item) and (index, reason) for items that could not be decoded."""
    device = device or default_device()
    batch_size = batch_size or default_batch_size(backbone)
    model = inference_model(backbone, len(items), device)
    if isinstance(backbone, ImageBackbone):
        batches = _image_batches(backbone, items, batch_size)
    else:
        batches = _text_batches(backbone, items, batch_size)
    out = np.zeros((len(items), backbone.embedding_dim), dtype=np.float32)
    failures: list[tuple[int, str]] = []
    unit = "img" if isinstance(backbone, ImageBackbone) else "text"
    with progress_bar(desc, total=len(items), unit=unit) as advance, inference_context(device, precision), \
            torch.inference_mode():
        for batch, idx, failed in batches:
            out[idx] = model(_to_device(batch, device)).float().cpu().numpy()
            failures += failed
            advance(len(idx))
    return out, failures


def item_digests(backbone: Backbone, items: Sequence) -> list[bytes]:
    if isinstance(backbone, ImageBackbone):
        return [item_digest(it) for it in items]
    return [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in items]


def embed_items(backbone: Backbone, items: Sequence, cache: EmbeddingCache | None = None,
                precision: str = "auto", batch_size: int | None = None, desc: str = "embedding"
                ) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Like `compute_embeddings`, but items already in `cache` are looked up instead of recomputed."""
    if cache is None:
        return compute_embeddings(backbone, items, batch_size, precision, desc=desc)
    digests = item_digests(backbone, items)
    out, found = cache.lookup(digests, backbone.embedding_dim)
    missing = np.flatnonzero(~found)
    failures: list[tuple[int, str]] = []
    if len(missing):
        log.info("%s: %d of %d items not cached", desc, len(missing), len(items))
        chunk = 4096  # extract and store in chunks: an interruption keeps what was done
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            emb, failed = compute_embeddings(backbone, [items[i] for i in part], batch_size, precision,
                                             desc=f"{desc} {start + len(part)}/{len(missing)}")
            bad = {i for i, _ in failed}
            good = [j for j in range(len(part)) if j not in bad]
            cache.store([digests[part[j]] for j in good], emb[good])
            out[part] = emb
            failures += [(int(part[i]), reason) for i, reason in failed]
    return out, failures


def failure_summary(items: Sequence, failures: list[tuple[int, str]]) -> str:
    i, reason = failures[0]
    return f"{len(failures)} unreadable image(s) skipped, e.g. {describe(items[i], i)} ({reason})"
