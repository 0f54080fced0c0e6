"""Leave-one-out k-nearest-neighbour accuracy of fixed embeddings: a quick, training-free estimate of how well a
probe will do, in the units a user cares about (a fraction correct)."""

from __future__ import annotations

import numpy as np

DEFAULT_K = 10


def knn_accuracy(embeddings: np.ndarray, labels: np.ndarray, k: int = DEFAULT_K) -> float:
    """Each item classified by its `k` most cosine-similar other items (votes weighted by similarity), after
    centring the embeddings on their mean so that a common offset does not make every item look alike."""
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels)
    if len(x) < 2 or len(x) != len(y):
        raise ValueError(f"need at least two embeddings with one label each, got {len(x)} and {len(y)}")
    x = x - x.mean(axis=0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)  # leave one out
    k = min(k, len(x) - 1)
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    classes, codes = np.unique(y, return_inverse=True)
    votes = np.zeros((len(x), len(classes)))
    weights = np.take_along_axis(similarity, neighbours, axis=1) + 1.0  # cosine in [-1, 1] -> [0, 2]
    np.add.at(votes, (np.repeat(np.arange(len(x)), k), codes[neighbours].ravel()), weights.ravel())
    return float((votes.argmax(axis=1) == codes).mean())
