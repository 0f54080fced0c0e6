"""Tables of texts and labels: CSV, TSV, JSONL and Parquet, with the text and label columns found by name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .dataset import Dataset

TABLE_EXTENSIONS = {".csv", ".tsv", ".jsonl", ".json", ".parquet", ".pq"}
TEXT_COLUMNS = ("text", "sentence", "sentence1", "review", "content", "utterance", "query", "question",
                "document", "body", "comment", "tweet", "message", "input")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target", "intent", "sentiment", "y", "coarse_label")


def is_table_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TABLE_EXTENSIONS


def read_table(path: Path) -> pd.DataFrame:
    """Read a table by its extension; every failure becomes a DataError naming the file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False)
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t", keep_default_na=False, quoting=3)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as e:
        raise DataError(f"cannot read table {path}: {e}") from e
    raise DataError(f"{path}: unsupported table format '{suffix}' (use {', '.join(sorted(TABLE_EXTENSIONS))})")


def _pick(df: pd.DataFrame, given: str | None, candidates: Sequence[str], role: str, path: Path,
          option: str) -> str:
    columns = [str(c) for c in df.columns]
    if given is not None:
        if given not in columns:
            raise DataError(f"{path} has no column '{given}' (columns: {', '.join(columns)})")
        return given
    by_lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    raise DataError(
        f"{path} has no {role} column (looked for {', '.join(candidates[:6])}, ...; columns: "
        f"{', '.join(columns)}): name it with {option}"
    )


def find_columns(df: pd.DataFrame, path: Path, text_column: str | None = None,
                 label_column: str | None = None, need_label: bool = True) -> tuple[str, str | None]:
    text = _pick(df, text_column, TEXT_COLUMNS, "text", path, "--text-column")
    label = _pick(df, label_column, LABEL_COLUMNS, "label", path, "--label-column") if need_label else None
    return text, label


def _sorted_classes(values: pd.Series) -> list[str]:
    uniques = values.unique()
    try:
        ordered = sorted(uniques, key=float)
    except (TypeError, ValueError):
        ordered = sorted(uniques, key=str)
    return [str(v) for v in ordered]


def read_text_table(path: Path, text_column: str | None = None, label_column: str | None = None,
                    classes: Sequence[str] | None = None) -> Dataset:
    """Read a labeled text table; with `classes`, labels must be among them (for val/test files)."""
    df = read_table(path)
    if len(df) == 0:
        raise DataError(f"{path} has no rows")
    text_col, label_col = find_columns(df, path, text_column, label_column)
    df = df[df[label_col].astype(str).str.len() > 0]
    texts = df[text_col].astype(str).tolist()
    labels_str = df[label_col].astype(str)
    if classes is None:
        classes = _sorted_classes(df[label_col])
        if len(classes) < 2:
            raise DataError(
                f"{path} column '{label_col}' has only one class ({classes[0] if classes else 'none'}): "
                "a classifier needs at least two"
            )
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels_str) - set(index))
    if unknown:
        raise DataError(f"{path} has labels not seen in training: {', '.join(unknown[:10])}")
    labels = np.array([index[v] for v in labels_str], dtype=np.int64)
    return Dataset("text", texts, labels, list(classes), name=path.stem)


def read_text_column(path: Path, text_column: str | None = None) -> list[str]:
    """The texts of a table (labels not needed), e.g. for prediction or unlabeled pretraining."""
    df = read_table(path)
    text_col, _ = find_columns(df, path, text_column, need_label=False)
    return df[text_col].astype(str).tolist()
