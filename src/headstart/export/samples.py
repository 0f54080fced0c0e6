"""Real items to check an export on: a seeded sample of one of the splits the model was trained with."""

from __future__ import annotations

import numpy as np

from ..data import Dataset


def sample(data: Dataset, n: int, seed: int = 0) -> Dataset:
    """At most `n` items of `data`, chosen evenly at random (seeded), in their original order."""
    if len(data) <= n:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
    return data.subset(keep)
