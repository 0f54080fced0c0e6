"""Predictions as JSON: the same records from `headstart predict`, the Python API and the HTTP server."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from .entities import entity_record


class Predictor(Protocol):
    """What `TrainedModel` (PyTorch) and `OnnxClassifier` (ONNX Runtime, OpenVINO) both offer."""

    classes: list[str]

    @property
    def task_name(self) -> str: ...  # classification, multilabel, regression

    @property
    def task_params(self) -> dict[str, Any]: ...  # what the task's decisions use (thresholds, interval widths)

    def scores(self, items: Sequence) -> tuple[np.ndarray, list[tuple[int, str]]]: ...


def _unreadable(row: Any) -> bool:
    if not isinstance(row, np.ndarray):  # a task's own per-item scores (tokens: the words' tag probabilities)
        return row is None
    return len(row) == 0 or math.isnan(float(row[0]))


def classification_record(row: np.ndarray, classes: Sequence[str], top_k: int, params: dict[str, Any]
                          ) -> dict[str, Any]:
    """{label, score, top_k: [{label, score}]} of one row of class probabilities."""
    k = max(1, min(top_k, len(classes)))
    order = row.argsort()[::-1][:k]
    return {"label": classes[order[0]], "score": round(float(row[order[0]]), 6),
            "top_k": [{"label": classes[j], "score": round(float(row[j]), 6)} for j in order]}


def multilabel_record(row: np.ndarray, classes: Sequence[str], top_k: int, params: dict[str, Any]
                      ) -> dict[str, Any]:
    """{labels: those whose probability reaches their threshold, scores: {label: probability}, most probable
    first}."""
    thresholds = params.get("thresholds") or [0.5] * len(classes)
    order = row.argsort()[::-1]
    return {"labels": [classes[j] for j in order if row[j] >= thresholds[j]],
            "scores": {classes[j]: round(float(row[j]), 6) for j in order}}


def regression_record(row: np.ndarray, classes: Sequence[str], top_k: int, params: dict[str, Any]
                      ) -> dict[str, Any]:
    """{values: {target: value}, intervals: {target: [low, high]}, coverage} (intervals when the model has them)."""
    record: dict[str, Any] = {"values": {t: round(float(v), 6) for t, v in zip(classes, row)}}
    widths = params.get("interval_half_widths")
    if widths:
        record["intervals"] = {t: [round(float(v - q), 6), round(float(v + q), 6)]
                               for t, v, q in zip(classes, row, widths)}
        record["coverage"] = params.get("coverage")
    return record


# Per task, one row of scores -> a prediction record. Here rather than in headstart.tasks because a deployment
# without torch (an exported graph, the server) makes the same records; a new task adds its function here.
RECORDS = {"classification": classification_record, "multilabel": multilabel_record,
           "regression": regression_record, "tokens": entity_record}


def prediction_record(row: np.ndarray, classes: Sequence[str], top_k: int = 3, task: str = "classification",
                      params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The prediction record of one row of scores for `task` (see RECORDS); {error} for a NaN (unreadable) row."""
    if _unreadable(row):
        return {"error": "unreadable"}
    return RECORDS[task](row, classes, top_k, params or {})


def prediction_records(model: Predictor, items: Sequence, top_k: int = 3, batch_size: int | None = None
                       ) -> Iterator[dict[str, Any]]:
    """One record per item: input and the task's prediction (label, score and the top-k labels; the label set
    with a score per label; the values with their intervals); unreadable items carry an error.
    `batch_size`: items per model call (default: the predictor's)."""
    probs, _failures = model.scores(items, batch_size=batch_size) if batch_size else model.scores(items)
    failures = dict(_failures)
    task, params = model.task_name, model.task_params
    for i, (item, row) in enumerate(zip(items, probs)):
        record = (prediction_record(row, model.classes, top_k, task, params) if i not in failures
                  else {"error": failures[i]})
        yield {"input": str(item), **record}
