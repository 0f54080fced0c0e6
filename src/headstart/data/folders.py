"""Folders of item files, one sub-folder per class (images today; any modality with file extensions)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..modalities import MODALITIES, Modality, ensure_same_modality
from .dataset import Dataset

log = logging.getLogger("headstart")


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
    left_out = ", ".join(f"{n} {m.noun} file(s)" for m, n in counts.items() if n and m is not best)
    if left_out:
        log.warning("%s: %s left out: the class folders are read as %s data (the kind with most files); one data set "
                    "holds one kind of item", folders[0].parent, left_out, best.noun)
    return best


def _readable_name(path: Path) -> str:
    """A path as text that can be printed and saved whatever its bytes (undecodable bytes as \\xff)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _refuse_undecodable_names(root: Path, folders: Sequence[Path]) -> None:
    """Class names and the data's path are saved in the model's JSON manifest, which holds text: a name whose
    bytes are not UTF-8 (Linux allows any) is refused before training rather than failing the save after it."""
    for path in (root, *folders):
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            what = "the class folder" if path in folders else "the data folder"
            raise DataError(f"{what} {_readable_name(path)} has a name that is not valid UTF-8: rename it (class names "
                            "are saved as text in the model)") from None


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
    _refuse_undecodable_names(root, folders)
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
