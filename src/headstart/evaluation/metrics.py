"""Held-out metrics: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, calibration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from .calibration import uncalibrated

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017); the same as torchmetrics'
    `multiclass_calibration_error(norm="l1")` (tested). Hand-written in NumPy so that evaluating an ONNX model
    needs no torch."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class), with p clipped at 1e-12 so that one certain mistake does not make it infinite."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over items of the squared distance between p and the one-hot label (0 best,
    2 worst)."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(1).mean())


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                           temperature: float = 1.0) -> dict[str, Any]:
    """All metrics as plain JSON types; `accuracy` and `macro_f1` are top-level keys.

    `probs` are the model's (calibrated) probabilities; `temperature` is the one they were scaled with, so that
    `ece_uncalibrated` can be reported beside `ece`.
    """
    labels = np.asarray(labels)
    raw = uncalibrated(probs, temperature)
    pred = probs.argmax(1)
    ids = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=ids, zero_division=0)
    return {
        "accuracy": float((pred == labels).mean()),
        "macro_f1": float(f1_score(labels, pred, labels=ids, average="macro", zero_division=0)),
        "n": len(labels),
        "ece": expected_calibration_error(probs, labels),
        "ece_uncalibrated": expected_calibration_error(raw, labels),
        "nll": negative_log_likelihood(probs, labels),
        "nll_uncalibrated": negative_log_likelihood(raw, labels),
        "brier": brier_score(probs, labels),
        "brier_uncalibrated": brier_score(raw, labels),
        "temperature": float(temperature),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "classes": list(classes),
        "confusion_matrix": confusion_matrix(labels, pred, labels=ids).tolist(),
    }
