"""Unlabeled data (for pretraining, distillation and labeling suggestions): image folders (class sub-folders
ignored), flat folders, built-ins, text columns of tables and plain-text files. Labels, where the source has
them, are never read into training."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..modalities import MODALITIES, get_modality
from ..modalities.text import TEXT_FILE_EXTENSIONS, read_text_lines
from .builtins import BUILTINS
from .dataset import Modality
from .tables import TABLE_EXTENSIONS, is_table_file, read_text_column

log = logging.getLogger(__name__)


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
        """A content hash of all items (bytes of each file, text of each line), independent of paths."""
        modality = get_modality(self.modality)
        h = hashlib.sha256(f"{self.modality}:{len(self.items)}".encode())
        for item in self.items:
            h.update(modality.digest(item))
        return h.hexdigest()[:32]

    def is_grayscale(self) -> bool:
        """True when the items are images without colour (checked on a sample)."""
        return get_modality(self.modality).is_grayscale(self.items)

    def subset(self, indices: Sequence[int] | np.ndarray) -> UnlabeledData:
        idx = np.asarray(indices, dtype=np.int64)
        items = self.items[idx] if isinstance(self.items, np.ndarray) else [self.items[i] for i in idx]
        return UnlabeledData(self.modality, items, self.name, self.source)


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
            texts = read_text_lines(path)
        else:
            raise DataError(f"{path} is not a table ({', '.join(sorted(TABLE_EXTENSIONS))}) or a text file (.txt): "
                            "give one of those, or a folder of images")
        if not texts:
            raise DataError(f"{path} holds no non-empty texts: add one text per line (or per table row)")
        return UnlabeledData("text", texts, path.stem, str(path))
    found = {m.name: m.list_files(path) for m in MODALITIES.values() if m.file_extensions}
    name = max(found, key=lambda k: len(found[k]))
    if not found[name]:
        tables = sorted(p.name for p in path.iterdir() if is_table_file(p) or p.suffix.lower() in TEXT_FILE_EXTENSIONS)
        hint = f"; for text, point at the file itself ({', '.join(tables[:3])})" if tables else ""
        known = ", ".join(sorted(e for m in MODALITIES.values() for e in m.file_extensions))
        raise DataError(f"{path} has no image or audio files (looked recursively for {known}){hint}")
    return UnlabeledData(name, found[name], path.name, str(path))
