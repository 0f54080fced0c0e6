"""Real items to check an export on: the splits the model was trained with, rebuilt from its manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Dataset, load_data, make_splits
from ..errors import DataError
from ..model import TrainedModel


def recorded_splits(model: TrainedModel, data: str | Path | None = None):
    """The model's train/val/test splits, rebuilt from what its manifest records (or from `data`, when given,
    split the same way). A source that is gone is an error that says to pass the data."""
    record = model.manifest.data
    source = data if data is not None else (record.source if record is not None else None)
    if source is None:
        raise DataError("the model does not record its training data: pass --data with labeled examples to check "
                        "the export on")
    try:
        raw = load_data(source, record.text_column if record else None, record.label_column if record else None,
                        classes=model.classes, modality=model.modality)
    except DataError as e:
        raise DataError(f"cannot read the data to check the export on ({e}): pass --data PATH") from None
    val_size = record.val_size if record and record.val_size is not None else 0.1
    test_size = record.test_size if record and record.test_size is not None else 0.2
    return make_splits(raw, val_size, test_size, record.labels_per_class if record else None,
                       record.seed if record else 0)


def sample(data: Dataset, n: int, seed: int = 0) -> Dataset:
    """At most `n` items of `data`, chosen evenly at random (seeded), in their original order."""
    if len(data) <= n:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
    return data.subset(keep)
