"""Folders of item files, one sub-folder per class (images today; any modality with file extensions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..modalities import MODALITIES, Modality, ensure_same_modality
from .dataset import Dataset


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_modality(folders: Sequence[Path]) -> Modality:
    """The modality whose files the class folders hold (the one with most files)."""
    counts = {m: sum(1 for f in folders if f.is_dir() for _ in m.list_files(f))
              for m in MODALITIES.values() if m.file_extensions}
    best = max(counts, key=counts.get) if counts else None
    if best is None or counts[best] == 0:
        known = ", ".join(sorted(e for m in counts for e in m.file_extensions))
        raise DataError(f"{folders[0].parent} has class sub-folders but no usable files in them (looked for {known})")
    return best


def read_class_folders(root: Path, classes: Sequence[str] | None = None, expected_modality: str | None = None
                       ) -> Dataset:
    """Read `root/<class>/<file>` into a Dataset; with `classes` (a trained model's), sub-folders must use them,
    and with `expected_modality` the files must be of it."""
    root = Path(root)
    folders = class_folders(root)
    if not folders:
        raise DataError(
            f"{root} has no class sub-folders: put each class's files in its own folder, "
            f"e.g. {root}/cat/1.jpg and {root}/dog/2.jpg"
        )
    modality = folder_modality(folders)
    if expected_modality is not None:
        ensure_same_modality(expected_modality, modality.name, "this model", "the data are")
    names = [f.name for f in folders]
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{root} has classes not seen in training: {', '.join(unknown)}")
        names = list(classes)
    elif len(names) < 2:
        raise DataError(f"{root} has only one class sub-folder ({names[0]}): a classifier needs at least two classes, "
                        "each in its own sub-folder")
    items: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        folder = root / name
        files = modality.list_files(folder) if folder.is_dir() else []
        if not files and classes is None:
            raise DataError(
                f"class '{name}' has no usable {modality.noun} files in {folder} "
                f"(looked for {', '.join(sorted(modality.file_extensions))}): add files or remove the folder"
            )
        items += files
        labels += [label] * len(files)
    return Dataset(modality.name, items, np.array(labels), list(names), name=root.name)
