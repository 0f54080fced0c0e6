"""Prediction over user inputs: files, folders, tables or stdin lines in, JSON-ready records out."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .data.tables import is_table_file, read_text_column
from .errors import DataError
from .modalities import get_modality
from .model import TrainedModel
from .runtime.codec_base import too_long_for_a_path
from .runtime.records import prediction_records as runtime_records


def collect_inputs(model: TrainedModel, inputs: Sequence[str], text_column: str | None = None) -> list:
    """Expand arguments into items: `-` reads stdin lines; each other argument is read by the model's modality
    (files, folders, literal texts), and tables give their text column where the modality takes texts."""
    expanded: list[str] = []
    for raw in inputs:
        expanded += [line.rstrip("\n") for line in sys.stdin if line.strip()] if raw == "-" else [raw]
    if not expanded:
        raise DataError("no inputs: give files, folders, a table, texts, or - to read lines from stdin")
    modality = get_modality(model.modality)
    items: list = []
    for raw in expanded:
        path = Path(raw).expanduser()
        if modality.reads_text_tables and not too_long_for_a_path(path) and is_table_file(path):
            items += read_text_column(path, text_column)
        else:
            items += modality.expand_input(raw)
    return items


def prediction_records(model: TrainedModel, items: Sequence, top_k: int = 3, batch_size: int | None = None
                       ) -> Iterator[dict[str, Any]]:
    """One record per item: input, label, score and the top-k labels; unreadable items carry an error.
    `batch_size`: items per model call (default: the modality's)."""
    return runtime_records(model, items, top_k, batch_size)
