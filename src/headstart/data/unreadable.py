"""Leaving out the items a modality cannot decode: a warning with a count, or with `strict` an error, the same
for labeled data sets, unlabeled data and prediction inputs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import DataError
from ..modalities import get_modality

log = logging.getLogger("headstart")


class ItemCollection(Protocol):
    """Named items of one modality: a Dataset, or unlabeled data."""

    name: str
    modality: str
    items: Sequence

    def __len__(self) -> int: ...

    def subset(self, indices: np.ndarray): ...


def drop_failures(data: ItemCollection, failures: list[tuple[int, str]], strict: bool) -> np.ndarray:
    """Indices of `data` to keep after unreadable items: a warning with a count, or with `strict` an error."""
    if not failures:
        return np.arange(len(data))
    message = f"{data.name}: {get_modality(data.modality).failure_summary(data.items, failures)}"
    if strict:
        raise DataError(message + " (without --strict they are skipped)")
    log.warning(message)
    return np.setdiff1d(np.arange(len(data)), [i for i, _ in failures])


def without_unreadable(data: ItemCollection, strict: bool) -> ItemCollection:
    """`data` less the items its modality cannot decode (checked by decoding each, in worker processes)."""
    failures = get_modality(data.modality).find_unreadable(data.items)
    return data.subset(drop_failures(data, failures, strict)) if failures else data
