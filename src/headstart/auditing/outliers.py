"""Outliers: items far from all others in embedding space (a blank image, a text in another language, a clip of
silence), whatever their class. The score is the mean cosine distance to the item's k nearest neighbours (the
k-NN score cleanlab's OutOfDistribution uses on features); an item is flagged when its score lies beyond Tukey's
far-out fence of all scores (third quartile plus 3 interquartile ranges), a rule with no setting to tune per data
set."""

from __future__ import annotations

import numpy as np

NEIGHBOURS = 10
FENCE_IQR = 3.0
MIN_ITEMS = 20  # fewer items give no quartiles to speak of


def outlier_scores(neighbour_similarity: np.ndarray) -> np.ndarray:
    """Mean cosine distance to the nearest neighbours (rows of the scan's most similar references)."""
    return 1.0 - neighbour_similarity.mean(axis=1)


def find_outliers(scores: np.ndarray) -> np.ndarray:
    """Indices of the scores beyond the far-out fence, highest first."""
    if len(scores) < MIN_ITEMS:
        return np.zeros(0, dtype=np.int64)
    q1, q3 = np.percentile(scores, [25, 75])
    flagged = np.flatnonzero(scores > q3 + FENCE_IQR * (q3 - q1))
    return flagged[np.argsort(-scores[flagged], kind="stable")]
