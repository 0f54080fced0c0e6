"""The modality interface: everything that depends on what an item is (an image file, a text, ...).

Decoding and batching for extraction, batches for training, a content digest for the embedding cache, finding
unreadable items and reading command-line inputs all live behind this interface, one module per modality, so
that nothing else in headstart asks "which modality?". A new modality is one new module that subclasses
`Modality` and registers itself with `@register_modality`.

The backbone an item goes through is passed in and used by duck typing (image backbones have `transform`,
text backbones `collate`): modalities sit below backbones and import none of them.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import DataError

# One extraction batch: the model input, the item indices it holds, and (index, reason) for undecodable items.
Batch = tuple[Any, np.ndarray, list[tuple[int, str]]]


def item_label(labels: np.ndarray | None, i: int) -> Any:
    """Item i's training label as a DataLoader batches it: a class id (int), or the item's row of labels or target
    values (float32; multi-label and regression tasks), or -1 where there are no labels (extraction)."""
    if labels is None:
        return -1
    return int(labels[i]) if labels.ndim == 1 else np.asarray(labels[i], np.float32)


def stack_labels(labels: Sequence[Any]) -> torch.Tensor:
    """One batch's `item_label`s as a tensor: class ids (int64), or items x outputs (float32)."""
    return torch.utils.data.default_collate(list(labels))


class Modality(ABC):
    """How items of one kind are decoded, batched, digested and read from the command line."""

    name: ClassVar[str]
    noun: ClassVar[str]  # what one item is called in messages: "image", "text"
    unit: ClassVar[str]  # progress-bar unit
    file_extensions: ClassVar[frozenset[str]] = frozenset()  # files that hold one item each (class folders)
    reads_text_tables: ClassVar[bool] = False  # `predict` may take a table's text column as items
    suggested_backbone: ClassVar[str]
    default_batch_size: ClassVar[int] = 64
    content_fingerprint_note: ClassVar[str] = ""  # what `content_fingerprints` compares, for the audit's notes
    # The audit's default: cosine similarity of mean-centred embeddings from which two items are near duplicates.
    # Images: CIFAR-10 and hymenoptera with lite0 pair no distinct images at 0.9 (benchmarks/near_duplicates.py), and
    # re-encoded copies are the thumbnails' to find. Text and audio set their own (a sentence encoder or a speech
    # embedding puts distinct items of one meaning close).
    near_duplicate_threshold: ClassVar[float] = 0.9
    # An embedding graph takes this modality's batches channels-last (images: the decode worker stacks them so,
    # which makes the graph's input a view instead of a copy).
    graph_inputs_channels_last: ClassVar[bool] = False
    # The TorchScript exporter can trace this modality's backbones (audio's spectrogram front end it cannot, so
    # trying it first only costs time).
    torchscript_exports: ClassVar[bool] = True

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

    def content_fingerprints(self, items: Sequence) -> np.ndarray | None:
        """Unit rows (one per item) that compare items by their content itself, as a second near-duplicate test
        beside the embeddings (auditing); None where the embeddings alone decide. Each modality overrides it:
        re-encoded copies drift in embedding space but not in their pixels, how far a re-cased copy of a sentence
        drifts depends on the backbone, and a clip with silence in front embeds like another recording."""
        return None

    @abstractmethod
    def expand_input(self, raw: str) -> list:
        """Items named by one command-line argument of `predict` (a file, a folder, a literal text ...)."""

    def refuse_other_modality(self, path: Path) -> None:
        """A file of another modality (an image given to an audio model) is an error that says what to give."""
        other = modality_of_file(path)
        if other is not None and other is not self:
            raise DataError(f"{path} is an {other.noun} file, but this model takes {self.noun}s "
                            f"({', '.join(sorted(self.file_extensions))} files or folders of them)")

    def preview_html(self, item: Any) -> str:
        """An item as a person sees it in the HTML report (self-contained: no links to files)."""
        import html

        return html.escape(self.describe(item, 0))

    def failure_summary(self, items: Sequence, failures: list[tuple[int, str]]) -> str:
        i, reason = failures[0]
        return f"{len(failures)} unreadable {self.noun}(s) skipped, e.g. {self.describe(items[i], i)} ({reason})"


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class EpochOrder(torch.utils.data.Sampler):
    """A permutation of n items that depends only on (seed, epoch): a run resumed at epoch k sees the order an
    uninterrupted run would have. Lightning calls `set_epoch` before each epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def order(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))

    def __iter__(self):
        return iter(self.order().tolist())


class EpochShuffle(EpochOrder):
    """EpochOrder that also tells the dataset the epoch, for seeded augmentations: each index is yielded as
    `epoch * n + index` so that the dataset, even in persistent worker processes, can seed an item's random
    augmentation from (seed, epoch, index); `split_epoch_index` undoes it."""

    def __iter__(self):
        return iter((self.order() + self.epoch * self.n).tolist())


def split_epoch_index(key: int, n: int) -> tuple[int, int]:
    """(epoch, index) of a key yielded by EpochShuffle over n items."""
    return divmod(key, n)


def item_and_rng(key: int, n: int, seed: int | None) -> tuple[int, contextlib.AbstractContextManager]:
    """The item a sampler key stands for, and a context in which torch's random numbers (an augmentation) depend
    only on (seed, epoch, item); with no seed (validation, extraction) the key is the item and nothing is seeded."""
    if seed is None:
        return key, contextlib.nullcontext()
    epoch, i = split_epoch_index(key, n)
    return i, _seeded(epoch_seed(seed, epoch) * 65_537 + i)


@contextlib.contextmanager
def _seeded(value: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(value)
        yield


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
