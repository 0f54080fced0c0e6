"""The modality interface: everything that depends on what an item is (an image file, a text, ...).

Decoding and batching for extraction, batches for training, a content digest for the embedding cache, finding
unreadable items and reading command-line inputs all live behind this interface, one module per modality, so
that nothing else in headstart asks "which modality?". A new modality is one new module that subclasses
`Modality` and registers itself with `@register_modality`.

The backbone an item goes through is passed in and used by duck typing (image backbones have `transform`,
text backbones `collate`): modalities sit below backbones and import none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError

# One extraction batch: the model input, the item indices it holds, and (index, reason) for undecodable items.
Batch = tuple[Any, np.ndarray, list[tuple[int, str]]]


class Modality(ABC):
    """How items of one kind are decoded, batched, digested and read from the command line."""

    name: ClassVar[str]
    noun: ClassVar[str]  # what one item is called in messages: "image", "text"
    unit: ClassVar[str]  # progress-bar unit
    file_extensions: ClassVar[frozenset[str]] = frozenset()  # files that hold one item each (class folders)
    reads_text_tables: ClassVar[bool] = False  # `predict` may take a table's text column as items
    suggested_backbone: ClassVar[str]
    default_batch_size: ClassVar[int] = 64

    def is_item_file(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self.file_extensions and not path.name.startswith(".")

    def list_files(self, folder: Path) -> list[Path]:
        """Item files under `folder`, recursively, in a stable order."""
        return sorted(p for p in folder.rglob("*") if self.is_item_file(p))

    def describe(self, item: Any, index: int) -> str:
        """How an item is named in messages."""
        return str(item)

    @abstractmethod
    def digest(self, item: Any) -> bytes:
        """A content hash of one item: caches follow the bytes, not the path."""

    @abstractmethod
    def extraction_batches(self, backbone: Any, items: Sequence, batch_size: int) -> Iterator[Batch]:
        """Model inputs for extraction in batches; a batch smaller than `batch_size` is decoded in-process."""

    @abstractmethod
    def training_loader(self, backbone: Any, items: Sequence, labels: np.ndarray, batch_size: int, train: bool,
                        seed: int = 0) -> Any:
        """A DataLoader of (inputs, labels) for training (`train=True`: shuffled, augmented) or validation."""

    def find_unreadable(self, items: Sequence) -> list[tuple[int, str]]:
        """(index, reason) for items that cannot be decoded; none by default."""
        return []

    def is_grayscale(self, items: Sequence) -> bool:
        """True when the items carry no colour (pretraining picks augmentations from it)."""
        return False

    @abstractmethod
    def expand_input(self, raw: str) -> list:
        """Items named by one command-line argument of `predict` (a file, a folder, a literal text ...)."""

    def failure_summary(self, items: Sequence, failures: list[tuple[int, str]]) -> str:
        i, reason = failures[0]
        return f"{len(failures)} unreadable {self.noun}(s) skipped, e.g. {self.describe(items[i], i)} ({reason})"


MODALITIES: dict[str, Modality] = {}


def register_modality(cls: type[Modality]) -> type[Modality]:
    """Class decorator: make a modality known by its `name`."""
    MODALITIES[cls.name] = cls()
    return cls


def get_modality(name: str) -> Modality:
    try:
        return MODALITIES[name]
    except KeyError:
        raise DataError(f"unknown modality '{name}' (known: {', '.join(MODALITIES)})") from None


def ensure_same_modality(takes: str, given: str, what_takes: str, what_given: str, fix: str = "",
                         error: type[Exception] = DataError) -> None:
    """One message for every mismatch: "<what_takes> takes image inputs, but <what_given> are text (<fix>)"."""
    if takes != given:
        raise error(f"{what_takes} takes {takes} inputs, but {what_given} {given}" + (f" ({fix})" if fix else ""))


def modality_of_file(path: Path) -> Modality | None:
    """The modality whose item files have this file's extension, if any."""
    suffix = path.suffix.lower()
    return next((m for m in MODALITIES.values() if suffix in m.file_extensions), None)
