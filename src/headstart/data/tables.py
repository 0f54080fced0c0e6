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
from ..modalities import Modality, modality_of_file
from ..tasks import Task, make_task
from .conll import read_token_table
from .dataset import Dataset

log = logging.getLogger("headstart")

TABLE_MODALITY = "text"  # what a table's rows hold
TABLE_EXTENSIONS = {".csv", ".tsv", ".jsonl", ".json", ".parquet", ".pq"}
TEXT_COLUMNS = ("text", "sentence", "sentence1", "review", "content", "utterance", "query", "question",
                "document", "body", "comment", "tweet", "message", "input")
# Columns that usually hold file paths, looked for after the text columns' names.
FILE_COLUMNS = ("path", "file", "filename", "filepath", "file_path", "image", "image_path", "image_file", "img",
                "audio", "audio_path", "audio_file")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target", "intent", "sentiment", "y", "coarse_label")
ITEM_COLUMNS = TEXT_COLUMNS + FILE_COLUMNS


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
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: a table needs a header row (for example text,label) and a row per item"
                        ) from None
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


def labeled_rows(df: pd.DataFrame, where: str | Path, item_column: str, label_column: str | None,
                 classes: Sequence[str] | None = None, task: Task | None = None
                 ) -> tuple[list[str], np.ndarray, list[str]]:
    """(items as text, labels, classes) of a table's labeled rows: what a labeled table file and an in-memory
    DataFrame share. The `task` (classification by default) says which columns hold the labels (`label_column`, or
    one found by name, or the regression targets) and encodes them; with `classes` (a trained model's), labels
    must be among them (for val/test data).

    Labels are read as strings exactly as written. Rows with an empty item or a missing label are dropped with
    a warning that counts them.
    """
    task = task or make_task()
    if len(df) == 0:
        raise DataError(f"{where} has no rows")
    columns = task.label_columns() or [pick_column(df, label_column, LABEL_COLUMNS, "label", where, "--label-column")]
    for column in columns:
        pick_column(df, column, (), "target", where, "--target")  # a missing column: the error lists the columns
    texts = column_texts(df, item_column, where, "text")
    cells = list(zip(*(column_texts(df, c, where, "label") for c in columns)))
    has_text = [t is not None and bool(t.strip()) for t in texts]
    keep = [i for i, (ok, row) in enumerate(zip(has_text, cells)) if ok and all(v is not None for v in row)]
    no_text = has_text.count(False)
    no_label = sum(1 for ok, row in zip(has_text, cells) if ok and any(v is None for v in row))
    if no_text or no_label:
        log.warning("%s: %d row(s) without text and %d without a label left out (%d of %d rows kept)",
                    Path(where).name if isinstance(where, Path) else where, no_text, no_label, len(keep), len(texts))
    if not keep:
        raise DataError(f"{where} has no row with both a text and a label")
    labels, classes = task.encode([cells[i] for i in keep], where, columns, classes)
    return [texts[i] for i in keep], labels, classes


def read_text_table(path: Path, text_column: str | None = None, label_column: str | None = None,
                    classes: Sequence[str] | None = None, task: Task | None = None) -> Dataset:
    """Read a labeled table; with `classes`, labels must be among them (for val/test files). Its items are texts,
    or paths of image or audio files (then the data are of that modality), read relative to the table's folder or
    to the folder named like the table (train.csv -> train/)."""
    df = read_table(path)
    if len(df) == 0:
        raise DataError(f"{path} has no rows")
    if task is not None and task.per_token:  # a tag per word: lists of tokens and tags
        return read_token_table(df, path, classes, task, path.stem)
    item_col = pick_column(df, text_column, ITEM_COLUMNS, "text or file", path, "--text-column")
    values, labels, classes = labeled_rows(df, path, item_col, label_column, classes, task)
    files = item_modality(values, path, item_col)
    if files is None:
        return Dataset(TABLE_MODALITY, values, labels, classes, name=path.stem, task=task or make_task())
    items = file_paths(values, files, path, item_col, bases=(path.parent, path.parent / path.stem))
    return Dataset(files.name, items, labels, classes, name=path.stem, task=task or make_task())


def item_modality(values: Sequence[str], where: Any, column: str) -> Modality | None:
    """The modality whose files the values name (all of them, with its extensions), or None for texts. A column
    where most values look like files of one modality but some do not is an error naming one that does not."""
    if not values:
        return None
    found = [modality_of_file(Path(v)) for v in values]
    named = [m for m in found if m is not None]
    if len(named) < len(values) / 2:
        return None
    first = named[0]
    odd = next((v for v, m in zip(values, found) if m is not first), None)
    if odd is not None:
        raise DataError(f"{where}: column '{column}' holds {first.noun} file paths but also '{odd}', which is not "
                        f"one ({', '.join(sorted(first.file_extensions))}): fix or drop that row")
    return first


def file_paths(values: Sequence[str], modality: Modality, where: Any, column: str,
               bases: Sequence[Path] = ()) -> list[Path]:
    """The values as paths: absolute, or relative to the first of `bases` (else the working directory) where
    the files are. Files that do not exist are an error (a wrong folder, relative to another place)."""
    paths = [Path(v).expanduser() for v in values]
    relative = [p for p in paths if not p.is_absolute()]
    base = next((b for b in bases if relative and all((b / p).is_file() for p in relative[:20])), None)
    if base is not None:
        paths = [p if p.is_absolute() else base / p for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        searched = ", ".join(str(b) for b in bases) or str(Path.cwd())
        raise DataError(f"{where}: {len(missing)} of {len(paths)} {modality.noun} paths in column '{column}' are not "
                        f"files, e.g. {missing[0]} (relative paths are read from {searched})")
    return paths


def read_text_column(path: Path, text_column: str | None = None) -> list[str]:
    """The non-empty texts of a table (labels not needed), e.g. for prediction or unlabeled pretraining."""
    df = read_table(path)
    text_col = pick_column(df, text_column, TEXT_COLUMNS, "text", path, "--text-column")
    return [t for t in column_texts(df, text_col, path, "text") if t is not None and t.strip()]
