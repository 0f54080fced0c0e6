"""Prediction over user inputs: files, folders, tables or stdin lines in, JSON-ready records out."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .data.images import list_images
from .data.tables import is_table_file, read_text_column
from .errors import DataError
from .model import TrainedModel


def _image_inputs(inputs: Iterable[str]) -> list[Path]:
    paths: list[Path] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise DataError(f"{path} contains no image files")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"input not found: {path}")
    return paths


def _text_inputs(inputs: Iterable[str], text_column: str | None) -> list[str]:
    texts: list[str] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if is_table_file(path):
            texts += read_text_column(path, text_column)
        elif path.is_file() and path.suffix.lower() == ".txt":
            texts += [line for line in path.read_text().splitlines() if line.strip()]
        else:
            texts.append(raw)  # a literal text
    return texts


def collect_inputs(model: TrainedModel, inputs: Sequence[str], text_column: str | None = None) -> list:
    """Expand arguments into items: `-` reads stdin lines; images: files and folders; text: tables, .txt, literals."""
    expanded: list[str] = []
    for raw in inputs:
        expanded += [line.rstrip("\n") for line in sys.stdin if line.strip()] if raw == "-" else [raw]
    if not expanded:
        raise DataError("no inputs: give files, folders, a table, texts, or - to read lines from stdin")
    if model.modality == "image":
        return _image_inputs(expanded)
    return _text_inputs(expanded, text_column)


def prediction_records(model: TrainedModel, items: Sequence, top_k: int = 3) -> Iterator[dict[str, Any]]:
    """One record per item: input, label, score and the top-k labels; unreadable items carry an error."""
    probs, _failures = model.scores(items)
    failures = dict(_failures)
    k = max(1, min(top_k, len(model.classes)))
    for i, (item, row) in enumerate(zip(items, probs)):
        name = str(item)
        if i in failures or any(math.isnan(p) for p in row[:1]):
            yield {"input": name, "error": failures.get(i, "unreadable")}
            continue
        order = row.argsort()[::-1][:k]
        yield {"input": name, "label": model.classes[order[0]], "score": round(float(row[order[0]]), 6),
               "top_k": [{"label": model.classes[j], "score": round(float(row[j]), 6)} for j in order]}
