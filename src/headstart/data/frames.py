"""In-memory labeled data, as the Python ecosystem holds it: a pandas DataFrame (or a dict of columns), or a pair
of lists `(items, labels)`. Items are texts, or paths to image or audio files (then the data are of that modality,
as a folder of those files would be). Rows go through the same checks as a table file's (`tables.labeled_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import DataError
from ..modalities import ensure_same_modality
from ..tasks import Task, make_task
from .conll import read_token_table
from .dataset import Dataset
from .tables import (
    ITEM_COLUMNS,
    LABEL_COLUMNS,
    TABLE_MODALITY,
    column_texts,
    file_paths,
    item_modality,
    labeled_rows,
    pick_column,
)

# What `fit`, `evaluate` and `load_data` take besides paths: a DataFrame, {column: values}, or (items, labels).
InMemoryData = pd.DataFrame | Mapping[str, Sequence] | tuple[Sequence, Sequence]

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
                   classes: Sequence[str] | None = None, modality: str | None = None, task: Task | None = None
                   ) -> Dataset:
    """A Dataset from a DataFrame, a mapping of columns or an (items, labels) pair.

    The item and label columns are found by name as in a table file (`text`, `sentence`, ... then `path`,
    `image`, `file`, ...; `label`, `category`, ...) or given. Texts give a text Dataset; a column of image or
    audio file paths gives a Dataset of that modality. With `classes` (a trained model's) labels must be among
    them; with `modality`, data of another modality are an error.
    """
    frame, where, name, pair = _as_frame(source)
    if task is not None and task.per_token:  # a tag per word: columns of token lists and tag lists
        return read_token_table(frame, where, classes, task, name)
    item_col = pick_column(frame, pair[0] if pair else text_column, ITEM_COLUMNS, "text or file", where,
                           "text_column=")
    task = task or make_task()
    label_col = None if task.label_columns() else pick_column(frame, pair[1] if pair else label_column,
                                                               LABEL_COLUMNS, "label", where, "label_column=")
    if label_col is not None:
        frame = _whole_number_labels(frame, label_col)
    values, labels, classes = labeled_rows(frame, where, item_col, label_col, classes, task)
    files = item_modality(values, where, item_col)
    found = files.name if files is not None else TABLE_MODALITY
    if modality is not None:
        ensure_same_modality(modality, found, "this model", "the data are")
    items = file_paths(values, files, where, item_col) if files is not None else values
    return Dataset(found, items, labels, classes, name=name, task=task)


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
    items = file_paths(values, files, where, name) if files is not None else values
    return items, data.index
