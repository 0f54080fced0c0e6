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

    def scores(self, items: Sequence) -> tuple[np.ndarray, list[tuple[int, str]]]: ...


def prediction_record(row: np.ndarray, classes: Sequence[str], top_k: int = 3) -> dict[str, Any]:
    """{label, score, top_k: [{label, score}]} of one row of class probabilities; {error} for a NaN row."""
    if len(row) == 0 or any(math.isnan(p) for p in row[:1]):
        return {"error": "unreadable"}
    k = max(1, min(top_k, len(classes)))
    order = row.argsort()[::-1][:k]
    return {"label": classes[order[0]], "score": round(float(row[order[0]]), 6),
            "top_k": [{"label": classes[j], "score": round(float(row[j]), 6)} for j in order]}


def prediction_records(model: Predictor, items: Sequence, top_k: int = 3, batch_size: int | None = None
                       ) -> Iterator[dict[str, Any]]:
    """One record per item: input, label, score and the top-k labels; unreadable items carry an error.
    `batch_size`: items per model call (default: the predictor's)."""
    probs, _failures = model.scores(items, batch_size=batch_size) if batch_size else model.scores(items)
    failures = dict(_failures)
    for i, (item, row) in enumerate(zip(items, probs)):
        record = prediction_record(row, model.classes, top_k) if i not in failures else {"error": failures[i]}
        yield {"input": str(item), **record}


RECORD_FILE_TYPES = (".csv", ".jsonl")
CSV_COLUMNS = ("input", "label", "score", "top_k", "error")


def check_records_file(path: Path) -> None:
    """Refuse (before any work) a `--out` file whose type `write_records` cannot write."""
    if path.suffix.lower() not in RECORD_FILE_TYPES:
        raise SettingsError(f"--out {path}: give a .csv or .jsonl file (got '{path.suffix or 'no extension'}')")
    if path.is_dir():
        raise SettingsError(f"--out {path} is a folder: give a .csv or .jsonl file")


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write prediction records to a .jsonl file (the lines `predict` prints) or a .csv file (columns input,
    label, score, top_k as JSON, error), atomically: a reader sees the old file or the whole new one. Returns
    the number of records."""
    from .._util import atomic_write_bytes

    check_records_file(path)
    rows = list(records)
    if path.suffix.lower() == ".jsonl":
        content = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "top_k": json.dumps(r["top_k"]) if "top_k" in r else None})
        content = buffer.getvalue()
    try:
        atomic_write_bytes(path, content.encode("utf-8"))
    except OSError as e:
        raise HeadstartError(f"cannot write {path} ({e.strerror or type(e).__name__}): choose another --out") from None
    return len(rows)
