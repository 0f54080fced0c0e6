"""In-memory labeled data, as the Python ecosystem holds it: a pandas DataFrame (or a dict of columns), or a pair
of lists `(items, labels)`. Items are texts, or paths to image or audio files (then the data are of that modality,
as a folder of those files would be). Rows go through the same checks as a table file's (`tables.labeled_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError
from ..modalities import Modality, ensure_same_modality, modality_of_file
from .dataset import Dataset
from .tables import LABEL_COLUMNS, TABLE_MODALITY, TEXT_COLUMNS, column_texts, labeled_rows, pick_column

# What `fit`, `evaluate` and `load_data` take besides paths: a DataFrame, {column: values}, or (items, labels).
InMemoryData = pd.DataFrame | Mapping[str, Sequence] | tuple[Sequence, Sequence]

# Columns that usually hold file paths, looked for after the text columns' names.
FILE_COLUMNS = ("path", "file", "filename", "filepath", "file_path", "image", "image_path", "image_file", "img",
                "audio", "audio_path", "audio_file")
ITEM_COLUMNS = TEXT_COLUMNS + FILE_COLUMNS
PAIR_COLUMNS = ("item", "label")  # the columns an (items, labels) pair becomes


def is_in_memory(source: Any) -> bool:
    """True for a DataFrame, a mapping of columns or an (items, labels) pair (not a path or a name)."""
    return isinstance(source, (pd.DataFrame, Mapping)) or (isinstance(source, tuple) and len(source) == 2)


def _as_frame(source: InMemoryData) -> tuple[pd.DataFrame, str, str, tuple[str, str] | None]:
    """(frame, how it is named in messages, its data-set name, the (item, label) columns an (items, labels)
    pair gets)."""
    if isinstance(source, pd.DataFrame):
        return source.rename(columns=str), "the DataFrame", "dataframe", None
    if isinstance(source, Mapping):
        try:
            return pd.DataFrame(dict(source)), "the columns given", "columns", None
        except ValueError as e:
            raise DataError(f"the columns given do not make a table ({e})") from None
    items, labels = source
    for name, values in (("items", items), ("labels", labels)):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise DataError(f"(items, labels): {name} must be a list, got {type(values).__name__}")
    if len(items) != len(labels):
        raise DataError(f"(items, labels): {len(items)} items but {len(labels)} labels")
    frame = pd.DataFrame({PAIR_COLUMNS[0]: list(items), PAIR_COLUMNS[1]: list(labels)}, dtype=object)
    return frame, "the (items, labels) lists", "lists", PAIR_COLUMNS


def item_modality(values: Sequence[str], where: str, column: str) -> Modality | None:
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


def _paths(values: Sequence[str], modality: Modality, where: str, column: str) -> list[Path]:
    """The values as paths; files that do not exist are an error (a wrong folder, relative to another place)."""
    paths = [Path(v).expanduser() for v in values]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{where}: {len(missing)} of {len(paths)} {modality.noun} paths in column '{column}' are not "
                        f"files, e.g. {missing[0]} (relative paths are read from {Path.cwd()})")
    return paths


def _whole_number_labels(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Integer labels that pandas holds as floats because some are missing (1.0, NaN) back to integers, so that
    the classes are '1', not '1.0' (a table file keeps what was written; a DataFrame column has no such text)."""
    labels = frame[column]
    if pd.api.types.is_float_dtype(labels.dtype) and labels.isna().any():
        present = labels.dropna()
        if (present == present.round()).all():
            return frame.assign(**{column: labels.astype("Int64")})
    return frame


def read_in_memory(source: InMemoryData, text_column: str | None = None, label_column: str | None = None,
                   classes: Sequence[str] | None = None, modality: str | None = None) -> Dataset:
    """A Dataset from a DataFrame, a mapping of columns or an (items, labels) pair.

    The item and label columns are found by name as in a table file (`text`, `sentence`, ... then `path`,
    `image`, `file`, ...; `label`, `category`, ...) or given. Texts give a text Dataset; a column of image or
    audio file paths gives a Dataset of that modality. With `classes` (a trained model's) labels must be among
    them; with `modality`, data of another modality are an error.
    """
    frame, where, name, pair = _as_frame(source)
    item_col = pick_column(frame, pair[0] if pair else text_column, ITEM_COLUMNS, "text or file", where,
                           "text_column=")
    label_col = pick_column(frame, pair[1] if pair else label_column, LABEL_COLUMNS, "label", where, "label_column=")
    frame = _whole_number_labels(frame, label_col)
    values, labels, classes = labeled_rows(frame, where, item_col, label_col, classes)
    files = item_modality(values, where, item_col)
    found = files.name if files is not None else TABLE_MODALITY
    if modality is not None:
        ensure_same_modality(modality, found, "this model", "the data are")
    items = _paths(values, files, where, item_col) if files is not None else values
    return Dataset(found, items, labels, classes, name=name)


def prediction_items(data: Any, modality: str, column: str | None = None) -> tuple[Sequence, pd.Index | None]:
    """Items to predict on, and the index of the rows they came from (None for a plain sequence).

    A Series is its values; a DataFrame its item column (`column`, or found by name as `read_in_memory` finds
    it). Every row must hold an item, so that predictions line up with rows. Paths of the model's files become
    Path items; anything else passes through unchanged.
    """
    where = "the Series"
    if isinstance(data, pd.DataFrame):
        column = pick_column(data, column, ITEM_COLUMNS, "text or file", "the DataFrame", "text_column=")
        data, where = data[column], "the DataFrame"
    if not isinstance(data, pd.Series):
        return data, None
    name = str(data.name) if data.name is not None else "values"
    values = column_texts(data.to_frame(name), name, where, "text")
    empty = next((i for i, v in enumerate(values) if v is None or not v.strip()), None)
    if empty is not None:
        raise DataError(f"{where}: row {data.index[empty]!r} of '{name}' is empty or missing: drop it or fill it in")
    files = item_modality(values, where, name)
    ensure_same_modality(modality, files.name if files is not None else TABLE_MODALITY, "this model",
                         f"the values of '{name}' are")
    items = _paths(values, files, where, name) if files is not None else values
    return items, data.index
