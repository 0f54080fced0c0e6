"""Class weights for imbalanced training data: one rule for every strategy that trains with cross-entropy.

`balanced` weights class c by n / (k · n_c) (n items, k classes, n_c items of class c: scikit-learn's
`compute_class_weight("balanced")`, King & Zeng 2001), so that every class contributes the same total weight to
the loss and a rare class is not traded away for the frequent ones. `auto` (the default) turns it on when the
largest class has more than IMBALANCE_RATIO times the items of the smallest, and leaves the loss unweighted
otherwise: on nearly balanced data the weights are close to 1 and only add noise. The choice, the ratio and the
weights go into the training record (the manifest's `training.class_weight`) and are logged in one line.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

log = logging.getLogger("headstart")

CLASS_WEIGHT_CHOICES = ("auto", "balanced", "none")
IMBALANCE_RATIO = 5.0  # `auto` weights the classes when the largest is more than this many times the smallest


def class_weights(labels: np.ndarray, n_classes: int, choice: str) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """The per-class loss weights for training labels `labels` (None: unweighted) and the record of the choice.

    `choice` is auto, balanced or none (checked by the strategy's settings). Every class must have items (the
    training run checks that before training)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    ratio = float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")
    imbalanced = ratio > IMBALANCE_RATIO
    resolved = ("balanced" if imbalanced else "none") if choice == "auto" else choice
    weights = None
    if resolved == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = np.flatnonzero(counts)
        weights = np.ones(n_classes)
        weights[present] = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    record = {"setting": choice, "resolved": resolved, "imbalance_ratio": round(ratio, 3), "imbalanced": imbalanced,
              "class_counts": counts.tolist(),
              "weights": None if weights is None else [round(float(w), 6) for w in weights]}
    log.info("%s", describe(record))
    return (None if weights is None else torch.as_tensor(weights, dtype=torch.float32)), record


def describe(record: dict[str, Any]) -> str:
    """One line on the class balance and the weighting used (for the log)."""
    ratio = f"largest {record['imbalance_ratio']:.3g}x the smallest"
    resolved = record["resolved"]
    if record["imbalanced"]:
        if resolved == "balanced":
            how = "--class-weight none to turn off" if record["setting"] == "auto" else "as --class-weight asked"
        else:
            how = "as --class-weight none asked; --class-weight balanced would weight rare classes up"
        return f"classes imbalanced ({ratio}): class weights {resolved} ({how})"
    if resolved == "balanced":
        return f"classes nearly balanced ({ratio}): class weights balanced (as --class-weight asked)"
    return f"classes nearly balanced ({ratio}): no class weights"
