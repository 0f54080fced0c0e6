"""Tables of texts and labels: CSV, TSV, JSONL and Parquet, with the text and label columns found by name."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .dataset import Dataset

log = logging.getLogger("headstart")

TABLE_MODALITY = "text"  # what a table's rows hold
TABLE_EXTENSIONS = {".csv", ".tsv", ".jsonl", ".json", ".parquet", ".pq"}
TEXT_COLUMNS = ("text", "sentence", "sentence1", "review", "content", "utterance", "query", "question",
                "document", "body", "comment", "tweet", "message", "input")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target", "intent", "sentiment", "y", "coarse_label")


def is_table_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TABLE_EXTENSIONS


def _cell(value: Any) -> str | None:
    """A table cell as the text it was written as; None when missing. Lists, maps and bytes raise TypeError."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, (float, np.floating))
                                                                and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("bytes")
    if isinstance(value, (list, tuple, np.ndarray)):
        raise TypeError("list")
    if isinstance(value, dict):
        raise TypeError("map")
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # 1.0 stays "1.0", distinct from an integer 1
    return str(value)


def _json_rows(path: Path) -> list[dict]:
    """Records of a JSON Lines file, or of a .json file holding one array of records."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: record {bad + 1} is a JSON {type(rows[bad]).__name__}, not an object with named fields")
    return rows


def read_table(path: Path) -> pd.DataFrame:
    """Read a table by its extension, every cell as the text it was written as (None where missing).

    Hand-written cell handling: pandas' readers turn NaN/NA/null into missing values in some formats and not
    others, drop leading zeros (01 -> 1) and merge 1 with 1.0; labels must stay exactly as written.
    """
    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise DataError(f"{path}: unsupported table format '{suffix}' (use {', '.join(sorted(TABLE_EXTENSIONS))})")
    try:
        if suffix in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                             na_filter=False)
            return df.map(lambda v: v if v != "" else None)
        if suffix in (".jsonl", ".json"):
            return pd.DataFrame(_json_rows(path), dtype=object)
        return pd.read_parquet(path).astype(object)
    except DataError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read table {path}: {first}") from None


def column_texts(df: pd.DataFrame, column: str, where: str | Path, role: str) -> list[str | None]:
    texts = []
    for row, value in enumerate(df[column].tolist(), 1):
        try:
            texts.append(_cell(value))
        except TypeError as e:
            raise DataError(f"{where}: the {role} column '{column}' holds {e} values (row {row}); {role}s must be "
                            f"plain text or numbers: convert the column (e.g. decode bytes to text)") from None
    return texts


def pick_column(df: pd.DataFrame, given: str | None, candidates: Sequence[str], role: str, where: str | Path,
                option: str) -> str:
    """The column named `given`, or the first of `candidates` found (case-insensitive); `where` and `option`
    name the table and the setting in the error."""
    columns = [str(c) for c in df.columns]
    if given is not None:
        if given not in columns:
            raise DataError(f"{where} has no column '{given}' (columns: {', '.join(columns)})")
        return given
    by_lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    raise DataError(
        f"{where} has no {role} column (looked for {', '.join(candidates[:6])}, ...; columns: "
        f"{', '.join(columns)}): name it with {option}"
    )


def find_columns(df: pd.DataFrame, path: str | Path, text_column: str | None = None,
                 label_column: str | None = None, need_label: bool = True) -> tuple[str, str | None]:
    text = pick_column(df, text_column, TEXT_COLUMNS, "text", path, "--text-column")
    label = pick_column(df, label_column, LABEL_COLUMNS, "label", path, "--label-column") if need_label else None
    return text, label


def _sorted_classes(values: Sequence[str]) -> list[str]:
    """Numeric-looking labels in numeric order (2 before 10), others alphabetically; never merged."""
    uniques = sorted(set(values))
    try:
        return sorted(uniques, key=lambda v: (float(v), v))
    except ValueError:
        return uniques


CONTINUOUS_DISTINCT = 20  # more distinct non-integer numbers than this: a measurement, not a set of classes
CONTINUOUS_MIN_DISTINCT = 10  # ... or at least this many, when they are most of the rows


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def looks_continuous(labels: Sequence[str]) -> bool:
    """Whether labels look like a regression target: all numbers, some with a fraction, and many distinct ones
    (more than CONTINUOUS_DISTINCT, or at least CONTINUOUS_MIN_DISTINCT that are most of the rows).

    Hand-written because no library draws this line. Whole numbers never count: 0/1/2, star ratings or
    CIFAR-100's 100 class ids are classes, and "1.0" or "4.5" in a handful of values are class names too.
    """
    distinct = set(labels)
    if len(distinct) < CONTINUOUS_MIN_DISTINCT:
        return False
    numbers = [_number(v) for v in distinct]
    if any(n is None for n in numbers) or all(float(n).is_integer() for n in numbers):
        return False
    return len(distinct) > CONTINUOUS_DISTINCT or len(distinct) > len(labels) / 2


def refuse_continuous_labels(labels: Sequence[str], path: str | Path, column: str) -> None:
    """A one-line DataError when the label column holds continuous numbers: trained as classes, each value is a
    class of one or two rows, and training fails later with a message about empty classes that misleads."""
    if not looks_continuous(labels):
        return
    distinct = list(dict.fromkeys(labels))  # in the order of the file
    numbers = [float(v) for v in distinct]
    raise DataError(
        f"{path}: label column '{column}' holds {len(distinct)} distinct numbers (e.g. {', '.join(distinct[:3])}, "
        f"...; from {min(numbers):g} to {max(numbers):g}): it looks like a regression target, and headstart "
        "classifies labels (regression is not supported yet): bin the values into a few classes (e.g. low, "
        "medium, high) in a new column, or name the column of class labels with --label-column")


def labeled_rows(df: pd.DataFrame, where: str | Path, item_column: str, label_column: str,
                 classes: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """(items as text, label indices, classes) of a table's labeled rows: what a labeled table file and an
    in-memory DataFrame share. With `classes`, labels must be among them (for val/test data).

    Labels are read as strings exactly as written. Rows with an empty item or a missing label are dropped with
    a warning that counts them.
    """
    if len(df) == 0:
        raise DataError(f"{where} has no rows")
    texts = column_texts(df, item_column, where, "text")
    labels = column_texts(df, label_column, where, "label")
    keep = [i for i, (t, y) in enumerate(zip(texts, labels)) if t is not None and t.strip() and y is not None]
    no_text = sum(1 for t in texts if t is None or not t.strip())
    no_label = sum(1 for t, y in zip(texts, labels) if t is not None and t.strip() and y is None)
    if no_text or no_label:
        log.warning("%s: %d row(s) without text and %d without a label left out (%d of %d rows kept)",
                    Path(where).name if isinstance(where, Path) else where, no_text, no_label, len(keep), len(texts))
    texts, label_names = [texts[i] for i in keep], [labels[i] for i in keep]
    if not texts:
        raise DataError(f"{where} has no row with both a text and a label")
    if classes is None:
        refuse_continuous_labels(label_names, where, label_column)
        classes = _sorted_classes(label_names)
        if len(classes) < 2:
            raise DataError(f"{where} column '{label_column}' has only one class ({classes[0]}): a classifier needs "
                            "at least two")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(label_names) - set(index))
    if unknown:
        raise DataError(f"{where} has labels not seen in training: {', '.join(unknown[:10])}")
    return texts, np.array([index[v] for v in label_names], dtype=np.int64), list(classes)


def read_text_table(path: Path, text_column: str | None = None, label_column: str | None = None,
                    classes: Sequence[str] | None = None) -> Dataset:
    """Read a labeled text table; with `classes`, labels must be among them (for val/test files)."""
    df = read_table(path)
    if len(df) == 0:
        raise DataError(f"{path} has no rows")
    text_col, label_col = find_columns(df, path, text_column, label_column)
    texts, labels, classes = labeled_rows(df, path, text_col, label_col, classes)
    return Dataset(TABLE_MODALITY, texts, labels, classes, name=path.stem)


def read_text_column(path: Path, text_column: str | None = None) -> list[str]:
    """The non-empty texts of a table (labels not needed), e.g. for prediction or unlabeled pretraining."""
    df = read_table(path)
    text_col, _ = find_columns(df, path, text_column, need_label=False)
    return [t for t in column_texts(df, text_col, path, "text") if t is not None and t.strip()]
