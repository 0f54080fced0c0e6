"""The in-memory description of a labeled data set: what the items are, their labels and class names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..tasks import Task, make_task

Modality = str  # a name registered in headstart.modalities: "image", "text", "audio"


@dataclass
class Dataset:
    """Items with their labels; what an item is (a path, an array, a string) is up to its modality, what a label is
up to the `task`: an integer indexing `classes` (classification), a 0/1 row over `classes` (the label names,
multilabel), a row of numbers (`classes` are then the targets' names, regression)."""

    modality: Modality
    items: Sequence
    labels: np.ndarray
    classes: list[str]
    name: str = "data"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason) left out while reading
    # Where the items came from, in words, for the split plan `fit` logs: "hymenoptera/val", "hymenoptera/train
    # (a stratified 20% cut, seed 0)". Set by `load_data` and `make_splits`; empty for data built in memory.
    origin: str = ""
    task: Task = field(default_factory=make_task)

    def __post_init__(self) -> None:
        self.labels = self.task.as_labels(self.labels, len(self.classes))
        if len(self.items) != len(self.labels):
            raise ValueError(f"{len(self.items)} items but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        """The items at `indices`, with their labels and this data set's classes (renamed to `name` if given)."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.items, np.ndarray):
            items = self.items[idx]
        else:
            items = [self.items[i] for i in idx]
        return replace(self, items=items, labels=self.labels[idx], name=name or self.name, skipped=[])

    def concatenate(self, other: Dataset, name: str | None = None) -> Dataset:
        """This data set's items followed by `other`'s; arrays of one shape stay one array. The classes must be
        the same; the modality is the caller's to check (`ensure_same_modality`), as everywhere."""
        if other.classes != self.classes:
            raise ValueError(f"cannot join {other.name} (classes {other.classes}) to {self.name} ({self.classes})")
        arrays = isinstance(self.items, np.ndarray) and isinstance(other.items, np.ndarray)
        if arrays and self.items.shape[1:] == other.items.shape[1:]:
            items: Sequence = np.concatenate([self.items, other.items])
        else:
            items = list(self.items) + list(other.items)
        return replace(self, items=items, labels=np.concatenate([self.labels, other.labels]),
                       name=name or self.name, skipped=[])

    def class_counts(self) -> dict[str, int] | None:
        """Items per class (per label, for multi-label data); None for regression targets."""
        return self.task.counts(self.labels, self.classes)


@dataclass
class PseudoLabels:
    """Items a teacher model labeled, to be added to a training split after splitting, and a JSON-ready record
    of where they came from (for the manifest)."""

    dataset: Dataset
    record: dict[str, Any]


@dataclass
class Splits:
    """Train/validation/test parts of one data set, sharing one list of classes."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None

    @property
    def classes(self) -> list[str]:
        """The class names, shared by every part (the training part's)."""
        return self.train.classes

    @property
    def modality(self) -> Modality:
        """What an item is (image, text, audio), the same in every part."""
        return self.train.modality

    @property
    def task(self) -> Task:
        """What the labels are (one class, a set of labels, numbers), the same in every part."""
        return self.train.task

    def summary(self) -> dict[str, int]:
        """The number of items in each part present, e.g. `{"train": 900, "val": 100, "test": 250}`."""
        return {k: len(v) for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v}

    def origins(self) -> dict[str, str]:
        """Where each part came from, in words (its name when it was built in memory)."""
        return {k: v.origin or v.name for k, v in (("train", self.train), ("val", self.val), ("test", self.test))
                if v is not None}

    def plan(self) -> list[str]:
        """One line per part: its size and where it came from, e.g. "test: 49 items from hymenoptera/train (a
        stratified 20% cut, seed 0)"."""
        sizes = {k: len(v) for k, v in (("train", self.train), ("val", self.val), ("test", self.test))
                 if v is not None}
        return [f"{k}: {sizes[k]:,} items from {origin}" for k, origin in self.origins().items()]
