"""The in-memory description of a labeled data set: what the items are, their labels and class names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

Modality = str  # a name registered in headstart.modalities: "image", "text", "audio"


@dataclass
class Dataset:
    """Items with integer labels indexing `classes`; what an item is (a path, an array, a string) is up to its modality."""

    modality: Modality
    items: Sequence
    labels: np.ndarray
    classes: list[str]
    name: str = "data"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason) left out while reading

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.items) != len(self.labels):
            raise ValueError(f"{len(self.items)} items but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.items, np.ndarray):
            items = self.items[idx]
        else:
            items = [self.items[i] for i in idx]
        return replace(self, items=items, labels=self.labels[idx], name=name or self.name, skipped=[])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


@dataclass
class Splits:
    """Train/validation/test parts of one data set, sharing one list of classes."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def modality(self) -> Modality:
        return self.train.modality

    def summary(self) -> dict[str, int]:
        return {k: len(v) for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v}
