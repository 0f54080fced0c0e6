"""Resolve what the user points at (a folder, a table, a built-in name) into train/val/test splits."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, SettingsError
from ..modalities import ensure_same_modality
from ..tasks import Task
from .builtins import BUILTINS
from .conll import is_conll_file, read_conll
from .dataset import Dataset, Splits
from .folders import class_folders, read_class_folders
from .frames import InMemoryData, is_in_memory, read_in_memory
from .shards import is_shard_folder, parquet_bytes_column, read_parquet_items, read_shards, shard_files, shard_splits
from .tables import TABLE_EXTENSIONS, is_table_file, read_text_table

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


def _explicit_split_paths(root: Path) -> dict[str, Path]:
    """Map split name -> folder or table when `root` holds train/ (val/ test/) folders or train.csv-like files."""
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        stem = child.stem.lower() if child.is_file() else child.name.lower()
        split = SPLIT_NAMES.get(stem)
        if split is None or (split in found and not (found[split].is_dir() and is_table_file(child))):
            continue
        # a table wins over a folder of its name (train.csv, train/)
        if child.is_dir() or is_table_file(child) or is_conll_file(child):
            found[split] = child
    return found if "train" in found else {}


def _read_one(path: Path, classes: list[str] | None, text_column: str | None, label_column: str | None,
              modality: str | None = None, task: Task | None = None) -> Dataset:
    if path.is_dir() and is_shard_folder(path):
        return read_shards(shard_files(path), classes, modality, task, name=path.name)
    if path.is_dir():
        _one_class_per_item(task, path)
        return read_class_folders(path, classes, modality)
    if is_conll_file(path):
        return read_conll(path, classes, task)
    if path.suffix.lower() in (".parquet", ".pq") and parquet_bytes_column(path):
        return read_parquet_items(path, label_column, classes, modality, task)
    data = read_text_table(path, text_column, label_column, classes, task)
    _expect(modality, data.modality)
    return data


def _one_class_per_item(task: Task | None, where: Any) -> None:
    """Class folders (and the built-in data sets) give one class per item: other tasks need a table."""
    if task is not None and not task.one_class_per_item:
        raise DataError(f"{where} gives one class per item (class folders), but --task {task.name} needs the "
                        "labels in a table: a CSV with an item column (texts, or image/audio file paths) and "
                        f"{'target columns' if task.label_columns() is not None else 'a label column'}")


def _expect(modality: str | None, found: str) -> None:
    if modality is not None:
        ensure_same_modality(modality, found, "this model", "the data are")


def load_data(source: str | Path | InMemoryData, text_column: str | None = None, label_column: str | None = None,
              classes: list[str] | None = None, modality: str | None = None, task: Task | None = None) -> Splits:
    """Read a data set as given, with only the splits it defines itself (val/test may be None).

    `source`: a folder, a table file, a built-in name, or data in memory (a DataFrame, a dict of columns, an
    `(items, labels)` pair; see `frames.read_in_memory`). With `classes` (e.g. a trained model's), labels are
    mapped onto them and unknown labels are an error; with `modality`, data of another modality are an error.
    `task` (classification by default) says how labels are read (multi-label cells, regression targets).
    """
    if is_in_memory(source):
        return Splits(read_in_memory(source, text_column, label_column, classes, modality, task), None, None)
    name = str(source)
    if name in BUILTINS:
        _one_class_per_item(task, f"the built-in data set {name}")
        splits = BUILTINS[name]()
        _expect(modality, splits.modality)
        if splits.val is None and splits.test is None:
            return Splits(replace(splits.train, origin=name), None, None)
        return Splits(*(None if part is None else replace(part, origin=f"{name} ({key} set)")
                        for key, part in (("train", splits.train), ("val", splits.val), ("test", splits.test))))
    path = Path(source).expanduser()
    if not path.exists():
        hint = f" or a built-in data set ({', '.join(BUILTINS)})"
        raise DataError(f"data not found: {path} does not exist (give a folder of class sub-folders, a table{hint})")
    if is_table_file(path) or is_conll_file(path):
        return Splits(replace(_read_one(path, classes, text_column, label_column, modality, task), origin=name), None,
                      None)
    if path.is_file():
        raise DataError(f"{path} is neither a folder of images nor a table ({', '.join(sorted(TABLE_EXTENSIONS))})")
    if is_shard_folder(path) and not class_folders(path):  # class folders win over a stray archive beside them
        return _read_shard_splits(path, classes, modality, task)
    explicit = _explicit_split_paths(path)
    if explicit:
        train = _read_one(explicit["train"], classes, text_column, label_column, modality, task)
        parts = {k: _read_one(p, train.classes, text_column, label_column, modality, task)
                 for k, p in explicit.items() if k != "train"}
        parts["train"] = train
        parts = {k: replace(part, origin=str(Path(name) / explicit[k].name)) for k, part in parts.items()}
        return Splits(parts["train"], parts.get("val"), parts.get("test"))
    if not class_folders(path):
        tables = sorted(p.name for p in path.iterdir() if is_table_file(p))
        if tables:
            raise DataError(f"{path} holds tables ({', '.join(tables)}) but no train file: name one train.csv "
                            "or point at the table itself")
    _one_class_per_item(task, path)
    return Splits(replace(read_class_folders(path, classes, modality), origin=name), None, None)


def data_task(source: Any) -> str | None:
    """The task the data themselves call for, or None (then the caller's default): a Dataset's or Splits' own,
    `tokens` for CoNLL files (a file, or a folder whose train split is one)."""
    if isinstance(source, (Dataset, Splits)):
        return source.task.name
    if not isinstance(source, (str, Path)) or str(source) in BUILTINS:
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        path = _explicit_split_paths(path).get("train", path)
    return "tokens" if is_conll_file(path) else None


def _read_shard_splits(path: Path, classes: list[str] | None, modality: str | None, task: Task | None) -> Splits:
    """A folder of tar shards: train-*/val-*/test-*.tar are those splits, unnamed shards are one data set."""
    groups = shard_splits(shard_files(path), SPLIT_NAMES)
    train = read_shards(groups["train"], classes, modality, task, name=path.name)
    parts = {k: read_shards(shards, train.classes, modality, task, name=f"{path.name}-{k}")
             for k, shards in groups.items() if k != "train"}
    parts["train"] = train
    named = len(groups) > 1 or groups["train"][0].name.lower().startswith("train")
    parts = {k: replace(part, origin=f"{path} ({k}-*.tar)" if named else str(path)) for k, part in parts.items()}
    return Splits(parts["train"], parts.get("val"), parts.get("test"))


def read_test_data(source: str | Path | Dataset, classes: list[str], modality: str,
                   text_column: str | None = None, label_column: str | None = None, task: Task | None = None
                   ) -> Dataset:
    """A labeled held-out set given apart from the training data (`fit --test`): its own test split when it
    defines one, else all of it, labeled with the training `classes` (a class they lack is an error)."""
    if isinstance(source, Dataset):
        ensure_same_modality(modality, source.modality, "the training data are", "the test data are")
        if list(source.classes) != list(classes):
            raise DataError(f"the test data's classes {source.classes} differ from the training classes {classes}")
        test = source
    else:
        try:
            splits = load_data(source, text_column, label_column, classes=classes, modality=modality, task=task)
        except DataError as e:
            raise DataError(f"test data {source}: {e}") from None
        test = splits.test or splits.train
    return replace(test, origin=f"{test.origin or test.name} (the test data given apart)")


def _stratified_split(data: Dataset, size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split keeping the proportions of the task's groups (classes; each item's rarest label; quintiles of a
    target); a held-out part gets at least one example per group."""
    # Imported here, not at the top: scikit-learn brings SciPy, about a second that `predict`, `export` and a
    # command refused on its options (a one-line usage error) would otherwise pay without splitting anything.
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    groups = data.task.stratify(data.labels)
    counts = np.unique(groups, return_counts=True)[1] if groups is not None else np.zeros(0, np.int64)
    n_classes = len(counts)
    stratify = groups if groups is not None and counts.min() >= 2 else None
    held = math.ceil(size * len(data)) if isinstance(size, float) else int(size)
    if stratify is not None:
        held = max(held, n_classes)
    elif groups is not None:  # too few to stratify: each class keeps one example for training, drawn at random
        return _split_keeping_one_per_class(data.name, groups, held, seed)
    try:
        keep, held_idx = train_test_split(idx, test_size=held, random_state=seed, stratify=stratify)
    except ValueError as e:
        raise DataError(f"cannot split {len(data)} examples of {data.name} ({e}): give more data or a smaller split") from e
    return np.sort(keep), np.sort(held_idx)


def _split_keeping_one_per_class(name: str, groups: np.ndarray, held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random held-out cut of `held` items that never takes a class's last example (a class with one
    example cannot be stratified, and a plain random cut could leave it out of training)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    _, first = np.unique(groups[order], return_index=True)
    candidates = np.setdiff1d(order, order[first])  # all but one random example of each class
    if len(candidates) < held:
        single = len(first) - len(np.unique(groups[candidates]))
        raise DataError(f"cannot cut a {held}-item held-out split from {name}: {single} of its {len(first)} classes "
                        f"have a single example, which training needs, and {len(candidates)} others are left: label "
                        "at least 2 examples per class, or give the held-out data yourself (--test, or a val/ folder "
                        "beside train/)")
    held_idx = rng.choice(candidates, held, replace=False)
    return np.setdiff1d(np.arange(len(groups)), held_idx), np.sort(held_idx)


def per_class_subset(data: Dataset, n: int, seed: int, warn: bool = True) -> Dataset:
    """Keep at most `n` examples of each class, drawn at random with `seed`."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(data.classes)):
        idx = np.flatnonzero(data.labels == c)
        if warn and len(idx) < n:
            log.warning("class '%s' has only %d examples in %s, fewer than %d", data.classes[c], len(idx), data.name, n)
        chosen.append(rng.permutation(idx)[:n])
    return data.subset(np.sort(np.concatenate(chosen)))


def _check_split_size(name: str, size: float | int) -> None:
    """A split size is a fraction strictly between 0 and 1, or a whole count of at least 1."""
    ok = (isinstance(size, float) and 0 < size < 1) or (isinstance(size, int) and not isinstance(size, bool)
                                                         and size >= 1)
    if not ok:
        flag = "--" + name.replace("_", "-")
        raise SettingsError(f"{name} ({flag}) must be a fraction between 0 and 1 (like 0.2) or a count of at least 1 "
                            f"(like 500), got {size!r}")


def make_splits(splits: Splits, val_size: float | int = 0.1, test_size: float | int = 0.2,
                labels_per_class: int | None = None, seed: int = 0) -> Splits:
    """Fill in missing test/val splits by seeded stratified splitting, then apply `labels_per_class`.

    With `labels_per_class=N` the training split keeps N examples per class and validation at most N per class;
    the test split is left whole so that results stay comparable across N.
    """
    if labels_per_class is not None and not splits.task.one_class_per_item:
        raise SettingsError(f"labels_per_class (--labels-per-class) applies to classification, not to --task "
                            f"{splits.task.name}: give a smaller table instead")
    if labels_per_class is not None and (isinstance(labels_per_class, bool) or not isinstance(labels_per_class, int)
                                         or labels_per_class < 1):
        raise SettingsError(f"labels_per_class (--labels-per-class) must be a whole number >= 1, got {labels_per_class!r}")
    for name, size in (("val_size", val_size), ("test_size", test_size)):
        _check_split_size(name, size)
    train, val, test = splits.train, splits.val, splits.test
    source, cuts = train.origin or train.name, []
    if test is None:
        keep, held = _stratified_split(train, test_size, seed)
        train, test = train.subset(keep), train.subset(held, name=f"{train.name}-test")
        test = replace(test, origin=f"{source} (a stratified {_share(test_size)} cut, seed {seed})")
        cuts.append("test")
    if val is None:
        keep, held = _stratified_split(train, val_size, seed + 1)
        train, val = train.subset(keep), train.subset(held, name=f"{train.name}-val")
        rest = " of what the test cut left" if cuts else ""
        val = replace(val, origin=f"{source} (a stratified {_share(val_size)} cut{rest}, seed {seed})")
        cuts.append("val")
    if cuts:
        train = replace(train, origin=f"{source} (what the {' and '.join(cuts)} cut{'s' * (len(cuts) > 1)} left)")
    if labels_per_class is not None:
        train = per_class_subset(train, labels_per_class, seed)
        val = per_class_subset(val, labels_per_class, seed, warn=False)
        train = replace(train, origin=f"{train.origin or train.name}, {labels_per_class} per class (seed {seed})")
        val = replace(val, origin=f"{val.origin or val.name}, at most {labels_per_class} per class")
    return Splits(train, val, test)


def _share(size: float | int) -> str:
    """A split size in words: 0.2 -> "20%", 500 -> "500-item"."""
    return f"{100 * size:.3g}%" if isinstance(size, float) else f"{size}-item"
