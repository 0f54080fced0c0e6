"""Predictions as JSON: the same records from `headstart predict`, the Python API and the HTTP server."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np


class Predictor(Protocol):
    """What `TrainedModel` (PyTorch) and `OnnxClassifier` (ONNX Runtime, OpenVINO) both offer."""

    classes: list[str]

    def scores(self, items: Sequence) -> tuple[np.ndarray, list[tuple[int, str]]]: ...


def prediction_record(row: np.ndarray, classes: Sequence[str], top_k: int = 3) -> dict[str, Any]:
    """{label, score, top_k: [{label, score}]} of one row of class probabilities; {error} for a NaN row."""
    if len(row) == 0 or any(math.isnan(p) for p in row[:1]):
        return {"error": "unreadable"}
    k = max(1, min(top_k, len(classes)))
    order = row.argsort()[::-1][:k]
    return {"label": classes[order[0]], "score": round(float(row[order[0]]), 6),
            "top_k": [{"label": classes[j], "score": round(float(row[j]), 6)} for j in order]}


def prediction_records(model: Predictor, items: Sequence, top_k: int = 3) -> Iterator[dict[str, Any]]:
    """One record per item: input, label, score and the top-k labels; unreadable items carry an error."""
    probs, _failures = model.scores(items)
    failures = dict(_failures)
    for i, (item, row) in enumerate(zip(items, probs)):
        record = prediction_record(row, model.classes, top_k) if i not in failures else {"error": failures[i]}
        yield {"input": str(item), **record}
