"""Held-out metrics of a multi-label model: micro and macro F1, mean average precision, subset accuracy, Hamming
loss, per-label results and how often labels occur together. scikit-learn computes each of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def mean_average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Macro mean over labels of average precision (area under the precision-recall curve, threshold-free);
    labels with no positive item are left out (their AP is undefined)."""
    from sklearn.metrics import average_precision_score

    present = np.asarray(labels).sum(0) > 0
    if not present.any():
        return float("nan")
    return float(average_precision_score(labels[:, present], scores[:, present], average="macro"))


def multilabel_metrics(labels: np.ndarray, scores: np.ndarray, names: Sequence[str], thresholds: np.ndarray
                       ) -> dict[str, Any]:
    """All metrics as plain JSON types, with the decisions at the per-label `thresholds` (what predict gives)."""
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        hamming_loss,
        log_loss,
        precision_recall_fscore_support,
    )

    y = np.asarray(labels).astype(np.int64)
    predicted = (np.asarray(scores) >= thresholds).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, zero_division=0)
    ap = [float(average_precision_score(y[:, j], scores[:, j])) if y[:, j].any() else None for j in range(y.shape[1])]
    clipped = np.clip(np.asarray(scores, np.float64), 1e-7, 1 - 1e-7)
    return {
        "macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y, predicted, average="micro", zero_division=0)),
        "map": mean_average_precision(y, np.asarray(scores)),
        "subset_accuracy": float((predicted == y).all(1).mean()),
        "hamming_loss": float(hamming_loss(y, predicted)),
        "log_loss": float(np.mean([log_loss(y[:, j], clipped[:, j], labels=[0, 1]) for j in range(y.shape[1])])),
        "labels_per_item": float(y.sum(1).mean()),
        "predicted_labels_per_item": float(predicted.sum(1).mean()),
        "n": len(y),
        "per_label": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
                   "average_precision": a, "threshold": float(t)}
            for name, p, r, f, s, a, t in zip(names, precision, recall, f1, support, ap, thresholds)
        },
        "labels": list(names),
        "co_occurrence": (y.T @ y).tolist(),
    }
