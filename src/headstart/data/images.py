"""Image folders (one sub-folder per class) and image decoding shared by every image path."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

from ..errors import DataError
from .dataset import Dataset, ImageItem

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, in a stable order."""
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image_folder(root: Path, classes: Sequence[str] | None = None) -> Dataset:
    """Read `root/<class>/*.jpg` into a Dataset; with `classes`, sub-folders must use those names."""
    root = Path(root)
    folders = class_folders(root)
    if not folders:
        raise DataError(
            f"{root} has no class sub-folders: put each class's images in its own folder, "
            f"e.g. {root}/cat/1.jpg and {root}/dog/2.jpg"
        )
    names = [f.name for f in folders]
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{root} has classes not seen in training: {', '.join(unknown)}")
        names = list(classes)
    items: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        folder = root / name
        files = list_images(folder) if folder.is_dir() else []
        if not files and classes is None:
            raise DataError(
                f"class '{name}' has no usable image files in {folder} "
                f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))}): add images or remove the folder"
            )
        items += files
        labels += [label] * len(files)
    return Dataset("image", items, np.array(labels), list(names), name=root.name)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert grayscale, palette, RGBA (composited on white) and CMYK images to RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def open_image(item: ImageItem, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an item to an RGB PIL image. `draft_size` lets JPEG decode at reduced scale when larger."""
    if isinstance(item, np.ndarray):
        return to_rgb(Image.fromarray(item))
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(item) as img:
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        img.load()
        return to_rgb(img)


def item_digest(item: ImageItem) -> bytes:
    """A content hash of an image item, so caches follow the bytes, not the path."""
    if isinstance(item, np.ndarray):
        h = hashlib.blake2b(digest_size=16)
        h.update(str(item.shape).encode())
        h.update(np.ascontiguousarray(item).tobytes())
        return h.digest()
    with open(item, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).digest()


def describe(item: ImageItem, index: int) -> str:
    return str(item) if not isinstance(item, np.ndarray) else f"item #{index}"


class ImageTensors(torch.utils.data.Dataset):
    """Decodes and transforms images in DataLoader workers; a broken image yields ok=False, not a crash."""

    def __init__(self, items: Sequence[ImageItem], transform: Callable, labels: np.ndarray | None = None,
                 draft_size: tuple[int, int] | None = None, fallback_shape: tuple[int, ...] = (3, 224, 224)):
        self.items = items
        self.transform = transform
        self.labels = labels
        self.draft_size = draft_size
        self.fallback_shape = fallback_shape

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        label = int(self.labels[i]) if self.labels is not None else -1
        try:
            x = self.transform(open_image(self.items[i], self.draft_size))
            return x, label, i, ""
        except Exception as e:
            return torch.zeros(self.fallback_shape), label, i, f"{type(e).__name__}: {e}"


def find_unreadable(items: Sequence[ImageItem], workers: int = 0) -> list[tuple[int, str]]:
    """Fully decode every image (in worker processes) and return (index, reason) for those that fail."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        ImageTensors(items, transform=lambda im: torch.zeros(1), fallback_shape=(1,)),
        batch_size=256, num_workers=workers, collate_fn=lambda b: [(i, err) for _, _, i, err in b],
    )
    return [(i, err) for batch in loader for i, err in batch if err]
