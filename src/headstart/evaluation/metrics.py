"""Held-out metrics: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, calibration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017). Hand-written: scikit-learn has no ECE."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """All metrics as plain JSON types; `accuracy` and `macro_f1` are top-level keys."""
    labels = np.asarray(labels)
    pred = probs.argmax(1)
    ids = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=ids, zero_division=0)
    return {
        "accuracy": float((pred == labels).mean()),
        "macro_f1": float(f1_score(labels, pred, labels=ids, average="macro", zero_division=0)),
        "n": len(labels),
        "ece": expected_calibration_error(probs, labels),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "classes": list(classes),
        "confusion_matrix": confusion_matrix(labels, pred, labels=ids).tolist(),
    }
