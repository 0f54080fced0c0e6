"""Unlabeled data for pretraining: image folders (class sub-folders ignored), flat folders, built-ins, text
columns of tables and plain-text files. Labels, where the source has them, are never read into training."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.builtins import BUILTINS
from ..data.dataset import Modality
from ..data.images import IMAGE_EXTENSIONS, item_digest, list_images, open_image
from ..data.tables import TABLE_EXTENSIONS, is_table_file, read_text_column
from ..errors import DataError

log = logging.getLogger(__name__)

TEXT_FILE_EXTENSIONS = {".txt", ".text"}


@dataclass
class UnlabeledData:
    """Items without labels: image paths or uint8 arrays, or strings."""

    modality: Modality
    items: Sequence
    name: str
    source: str

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self) -> str:
        """A content hash of all items (bytes of each image, text of each line), independent of paths."""
        h = hashlib.sha256()
        h.update(f"{self.modality}:{len(self.items)}".encode())
        if self.modality == "text":
            for text in self.items:
                h.update(text.encode("utf-8", "surrogatepass"))
                h.update(b"\0")
        elif isinstance(self.items, np.ndarray):
            h.update(str(self.items.shape).encode())
            h.update(np.ascontiguousarray(self.items).tobytes())
        else:
            for item in self.items:
                h.update(item_digest(item))
        return h.hexdigest()[:32]

    def is_grayscale(self, sample: int = 32) -> bool:
        """True when the images carry no colour (checked on up to `sample` evenly spaced images)."""
        if self.modality != "image" or not len(self.items):
            return False
        if isinstance(self.items, np.ndarray) and self.items.ndim == 3:
            return True  # (N, H, W): single-channel arrays
        for i in np.linspace(0, len(self.items) - 1, min(sample, len(self.items))).astype(int):
            try:
                pixels = np.asarray(open_image(self.items[i]).resize((32, 32)), dtype=np.int16)
            except Exception:
                continue
            if np.abs(pixels[..., 0] - pixels[..., 1]).max() > 8 or np.abs(pixels[..., 1] - pixels[..., 2]).max() > 8:
                return False
        return True

    def subset(self, indices: Sequence[int] | np.ndarray) -> UnlabeledData:
        idx = np.asarray(indices, dtype=np.int64)
        items = self.items[idx] if isinstance(self.items, np.ndarray) else [self.items[i] for i in idx]
        return UnlabeledData(self.modality, items, self.name, self.source)


def _read_text_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") from e
    return [line.strip() for line in lines if line.strip()]


def read_unlabeled(source: str | Path, text_column: str | None = None) -> UnlabeledData:
    """Read what the user points at as unlabeled images or texts; fails with a DataError saying what to give."""
    name = str(source)
    if name in BUILTINS:
        splits = BUILTINS[name]()
        return UnlabeledData(splits.train.modality, splits.train.items, name, name)  # training images only
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"unlabeled data not found: {path} does not exist (give an image folder, a table with a text "
                        f"column, a .txt file with one text per line, or a built-in: {', '.join(BUILTINS)})")
    if path.is_file():
        suffix = path.suffix.lower()
        if is_table_file(path):
            texts = [t for t in read_text_column(path, text_column) if t.strip()]
        elif suffix in TEXT_FILE_EXTENSIONS:
            texts = _read_text_file(path)
        else:
            raise DataError(f"{path} is not a table ({', '.join(sorted(TABLE_EXTENSIONS))}) or a text file (.txt): "
                            "give one of those, or a folder of images")
        if not texts:
            raise DataError(f"{path} holds no non-empty texts: add one text per line (or per table row)")
        return UnlabeledData("text", texts, path.stem, str(path))
    images = list_images(path)
    if not images:
        tables = sorted(p.name for p in path.iterdir() if is_table_file(p) or p.suffix.lower() in TEXT_FILE_EXTENSIONS)
        hint = f"; for text, point at the file itself ({', '.join(tables[:3])})" if tables else ""
        raise DataError(f"{path} has no image files (looked recursively for {', '.join(sorted(IMAGE_EXTENSIONS))})"
                        f"{hint}")
    return UnlabeledData("image", images, path.name, str(path))
