"""On-disk cache of embeddings keyed by backbone (weights + preprocessing), precision and item contents."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from ._util import sha256_bytes
from .data.builtins import cache_root

if TYPE_CHECKING:
    from .backbones.base import Backbone

log = logging.getLogger("headstart")


def _checksum(digests: np.ndarray, embeddings: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(digests).tobytes())
    h.update(np.ascontiguousarray(embeddings, np.float32).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """Shards of (content digest, embedding) rows under one folder per backbone key.

    Each store writes a new shard atomically, so concurrent or interrupted runs never corrupt it, and items are
    matched by content: renamed or re-split files still hit, edited files miss. Each shard carries a checksum of
    its numbers: a damaged, truncated or empty shard is deleted with a warning and its items are recomputed.
    """

    def __init__(self, key: str, root: Path | None = None):
        self.folder = (root or cache_root() / "embeddings") / key
        self.hits = 0
        self.misses = 0
        self.disabled = False

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("*.safetensors")) if self.folder.is_dir() else []

    def lookup(self, digests: Sequence[bytes], dim: int, count: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, found mask); rows not found are zeros. `count`: add to `hits` and `misses` (not for the
        rows that other ranks of a distributed run stored a moment ago)."""
        wanted: dict[bytes, list[int]] = defaultdict(list)  # duplicates (same text, same file twice) share a row
        for i, d in enumerate(digests):
            wanted[d].append(i)
        out = np.zeros((len(digests), dim), dtype=np.float32)
        found = np.zeros(len(digests), dtype=bool)
        for shard in self._shards():
            if found.all():
                break
            tensors = self._read(shard)
            if tensors is None or tensors["embeddings"].shape[1] != dim:
                continue
            rows = [(i, r) for r, k in enumerate(map(bytes, tensors["digests"])) if k in wanted for i in wanted[k]]
            rows = [(i, r) for i, r in rows if not found[i]]
            if rows:
                dst, src = map(np.array, zip(*rows))
                out[dst] = tensors["embeddings"][src]
                found[dst] = True
        if count:
            self.hits += int(found.sum())
            self.misses += int((~found).sum())
        return out, found

    def _read(self, shard: Path) -> dict[str, np.ndarray] | None:
        """A shard's tensors, or None (and the shard deleted) when it is damaged."""
        try:
            with safe_open(str(shard), "np") as f:
                tensors = {k: f.get_tensor(k) for k in ("digests", "embeddings")}
                expected = (f.metadata() or {}).get("blake2b")
            if expected != _checksum(tensors["digests"], tensors["embeddings"]):
                raise ValueError("checksum mismatch")
            return tensors
        except (OSError, MemoryError):
            raise  # the disk or memory, not the shard: keep it
        except Exception as e:  # truncated, empty, garbage, or numbers changed after writing
            log.warning("embedding cache: %s is damaged (%s); deleted, its items will be recomputed", shard,
                        str(e).splitlines()[0][:80] if str(e) else type(e).__name__)
            shard.unlink(missing_ok=True)
            return None

    def store(self, digests: Sequence[bytes], embeddings: np.ndarray) -> None:
        """Add a shard. The cache only saves time: if it cannot be written (read-only, full disk), say so once
        and go on without it."""
        if len(digests) == 0 or self.disabled:
            return
        keys = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), -1)
        keys, embeddings = np.ascontiguousarray(keys), np.ascontiguousarray(embeddings, np.float32)
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            os.close(fd)
            save_file({"digests": keys, "embeddings": embeddings}, tmp,
                      metadata={"blake2b": _checksum(keys, embeddings)})
            os.replace(tmp, self.folder / f"{uuid.uuid4().hex}.safetensors")
        except OSError as e:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            self.disabled = True
            log.warning("embedding cache: cannot write to %s (%s); going on without caching (set HEADSTART_CACHE "
                        "to a writable folder, or pass --no-cache)", self.folder, e.strerror or type(e).__name__)


def backbone_cache(backbone: Backbone, precision: str, enabled: bool = True) -> EmbeddingCache | None:
    """The cache of `backbone`'s embeddings at `precision`, shared by `fit` and `select` (so a backbone chosen by
    `select` starts warm in `fit`); None when disabled or for random weights (nothing worth keeping)."""
    if not (enabled and backbone.is_pretrained):
        return None
    return EmbeddingCache(sha256_bytes(backbone.fingerprint().encode(), precision.encode())[:24])
