"""Predictions as JSON: the same records from `headstart predict`, the Python API and the HTTP server."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import HeadstartError, SettingsError


class Predictor(Protocol):
    """What `TrainedModel` (PyTorch) and `OnnxClassifier` (ONNX Runtime, OpenVINO) both offer."""

    classes: list[str]

    @property
    def task_name(self) -> str: ...  # classification, multilabel, regression

    @property
    def task_params(self) -> dict[str, Any]: ...  # what the task's decisions use (thresholds, interval widths)

    def scores(self, items: Sequence) -> tuple[np.ndarray, list[tuple[int, str]]]: ...


def _unreadable(row: np.ndarray) -> bool:
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
           "regression": regression_record}


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


RECORD_FILE_TYPES = (".csv", ".jsonl")


def check_records_file(path: Path) -> None:
    """Refuse (before any work) a `--out` file whose type `write_records` cannot write."""
    if path.suffix.lower() not in RECORD_FILE_TYPES:
        raise SettingsError(f"--out {path}: give a .csv or .jsonl file (got '{path.suffix or 'no extension'}')")
    if path.is_dir():
        raise SettingsError(f"--out {path} is a folder: give a .csv or .jsonl file")


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write prediction records to a .jsonl file (the lines `predict` prints) or a .csv file (a column per
    field, nested ones as JSON: input, label, score, top_k, error for a classifier), atomically: a reader sees
    the old file or the whole new one. Returns the number of records."""
    from .._util import atomic_write_bytes

    check_records_file(path)
    rows = list(records)
    if path.suffix.lower() == ".jsonl":
        content = "".join(json.dumps(r) + "\n" for r in rows)
    else:  # the records' fields as columns (a task's own: label and score, labels, values), nested ones as JSON
        columns = [*dict.fromkeys(k for r in rows for k in r if k != "error"), "error"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
        content = buffer.getvalue()
    try:
        atomic_write_bytes(path, content.encode("utf-8"))
    except OSError as e:
        raise HeadstartError(f"cannot write {path} ({e.strerror or type(e).__name__}): choose another --out") from None
    return len(rows)
