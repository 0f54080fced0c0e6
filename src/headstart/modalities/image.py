"""Images: files (jpg, png, ...) or decoded uint8 arrays from a built-in data set."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._util import worker_count
from ..errors import DataError
from ..runtime.codec_base import expand_files
from ..runtime.image_codec import IMAGE_EXTENSIONS, read_image
from ..runtime.members import StoredItem
from .base import Batch, EpochShuffle, Modality, item_and_rng, item_label, register_modality

THUMBNAIL_SIZE = 16  # the side of the grayscale thumbnails that `content_fingerprints` compares

# An image item is a file path, a decoded uint8 array (H, W) or (H, W, C) from a built-in data set, or an image file's
# bytes stored inside a larger file (a tar shard's member, a Parquet cell: `runtime.members`).
ImageItem = Path | np.ndarray | StoredItem


def open_image(item: ImageItem, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an item to an RGB PIL image (the same decoding as deployment's). `draft_size` lets JPEG decode at
    reduced scale when larger."""
    return read_image(item, draft_size)


def file_digest(path: Path | StoredItem) -> bytes:
    """blake2b of a file's bytes, read in chunks (hashlib.file_digest needs Python 3.11), or of a stored item's."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(path, StoredItem):
        try:
            h.update(path.read())
        except Exception as e:  # an unreadable member digests as its name: its decoding then reports why
            h.update(f"unreadable {path}: {e}".encode())
        return h.digest()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or type(e).__name__}): fix its permissions or remove it") from None
    return h.digest()


class ImageTensors(torch.utils.data.Dataset):
    """Decodes and transforms images in DataLoader workers; a broken image yields an error string, not a crash."""

    def __init__(self, items: Sequence[ImageItem], transform: Callable, labels: np.ndarray | None = None,
                 draft_size: tuple[int, int] | None = None, fallback_shape: tuple[int, ...] = (3, 224, 224),
                 seed: int | None = None):
        self.items = items
        self.transform = transform
        self.labels = labels
        self.draft_size = draft_size
        self.fallback_shape = fallback_shape
        self.seed = seed  # set: keys come from EpochShuffle, and each item's augmentation is seeded by them

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int):
        i, rng = item_and_rng(key, len(self.items), self.seed)
        label = item_label(self.labels, i)
        try:
            with rng:
                x = self.transform(open_image(self.items[i], self.draft_size))
            return x, label, i, ""
        except Exception as e:
            return torch.zeros(self.fallback_shape), label, i, f"{type(e).__name__}: {e}"


def _channels_last_collate(batch):
    x, y, _, _ = torch.utils.data.default_collate(batch)
    return x.contiguous(memory_format=torch.channels_last), y


def _stack_channels_last(batch):
    """Extraction batches stacked straight into channels_last in the worker (one copy there, none in the main
    process, which otherwise spent 1.4 ms an image making it; the profile in RESULTS.md, issue 27)."""
    xs, _, idx, errors = zip(*batch)
    return torch.stack([t.permute(1, 2, 0) for t in xs]).permute(0, 3, 1, 2), None, torch.tensor(idx), list(errors)


@register_modality
class ImageModality(Modality):
    name = "image"
    graph_inputs_channels_last = True
    noun = "image"
    unit = "img"
    file_extensions = IMAGE_EXTENSIONS
    suggested_backbone = "efficientnet_lite0"
    default_batch_size = 64
    content_fingerprint_note = f"{THUMBNAIL_SIZE}x{THUMBNAIL_SIZE} grayscale thumbnails"

    def describe(self, item: Any, index: int) -> str:
        return f"item #{index}" if isinstance(item, np.ndarray) else str(item)

    def preview_html(self, item: Any, size: int = 112) -> str:
        """A thumbnail, inline as base64 PNG."""
        import base64
        import html
        import io

        image = open_image(item).convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return (f'<img class="thumb" alt="{html.escape(self.describe(item, 0))}" '
                f'src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">')

    def digest(self, item: ImageItem) -> bytes:
        if isinstance(item, np.ndarray):
            h = hashlib.blake2b(digest_size=16)
            h.update(str(item.shape).encode())
            h.update(np.ascontiguousarray(item).tobytes())
            return h.digest()
        return file_digest(item)

    def content_fingerprints(self, items: Sequence) -> np.ndarray:
        """Unit rows of each image's THUMBNAIL_SIZE-pixel grayscale thumbnail, its mean removed (zero rows for an
        unreadable or uniform image, which then match nothing). JPEGs decode at a reduced scale (draft), so a photo
        costs about a millisecond. Hand-written because embeddings alone miss re-encoded copies (auditing's
        CONTENT_THRESHOLD says what was measured)."""
        side = THUMBNAIL_SIZE
        out = np.zeros((len(items), side * side), dtype=np.float32)
        for i, item in enumerate(items):
            try:
                image = open_image(item, (4 * side, 4 * side))
            except Exception:  # an unreadable image is reported by the embedding pass, not here
                continue
            pixels = np.asarray(image.convert("L").resize((side, side), Image.BILINEAR), dtype=np.float32).ravel()
            out[i] = pixels - pixels.mean()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def extraction_batches(self, backbone: Any, items: Sequence, batch_size: int) -> Iterator[Batch]:
        size = backbone.image_size
        dataset = ImageTensors(items, backbone.transform(train=False), draft_size=backbone.draft_size(),
                               fallback_shape=(3, size, size))
        workers = worker_count() if len(items) > batch_size else 0  # one batch: no worker start-up
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                             prefetch_factor=4 if workers else None, collate_fn=_stack_channels_last)
        for x, _, idx, errors in loader:
            failed = [(int(i), e) for i, e in zip(idx, errors) if e]
            yield x.contiguous(memory_format=torch.channels_last), idx.numpy(), failed

    def training_loader(self, backbone: Any, items: Sequence, labels: np.ndarray, batch_size: int, train: bool,
                        seed: int = 0) -> Any:
        dataset = ImageTensors(items, backbone.transform(train=train), labels, backbone.draft_size(),
                               seed=seed if train else None)
        workers = worker_count()
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, drop_last=False,
                                           sampler=EpochShuffle(len(items), seed) if train else None,
                                           num_workers=workers, persistent_workers=workers > 0,
                                           collate_fn=_channels_last_collate)

    def find_unreadable(self, items: Sequence) -> list[tuple[int, str]]:
        """Fully decode every image file (arrays are decoded already) and report those that fail."""
        if isinstance(items, np.ndarray):
            return []
        loader = torch.utils.data.DataLoader(
            ImageTensors(items, transform=lambda im: torch.zeros(1), fallback_shape=(1,)),
            batch_size=256, collate_fn=lambda b: [(i, err) for _, _, i, err in b],
        )
        return [(i, err) for batch in loader for i, err in batch if err]

    def is_grayscale(self, items: Sequence, sample: int = 32) -> bool:
        if not len(items):
            return False
        if isinstance(items, np.ndarray) and items.ndim == 3:
            return True  # (N, H, W): single-channel arrays
        for i in np.linspace(0, len(items) - 1, min(sample, len(items))).astype(int):
            try:
                pixels = np.asarray(open_image(items[i]).resize((32, 32)), dtype=np.int16)
            except Exception:
                continue
            if np.abs(pixels[..., 0] - pixels[..., 1]).max() > 8 or np.abs(pixels[..., 1] - pixels[..., 2]).max() > 8:
                return False
        return True

    def expand_input(self, raw: str) -> list:
        return expand_files(raw, self.file_extensions, "image", "an image model takes image files or folders",
                            check=self.refuse_other_modality)
