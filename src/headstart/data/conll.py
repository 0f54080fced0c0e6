"""Token-tagged text: CoNLL-style files (`.conll`, `.bio`, `.iob`, and `.txt` files of that shape) and tables
with `tokens` and `tags` columns holding JSON lists.

A CoNLL file has one token per line with its tag in the last column (other columns, such as part-of-speech tags,
are ignored), sentences separated by any whitespace-only line (some real files, WNUT-17's among them, use a lone
TAB), and `-DOCSTART-` lines that are not words. Tags are checked as BIO/BIOES (`tasks.tokens.check_tags`).
Hand-written because the readers that exist (datasets' conll builders, seqeval) assume one exact layout and
report nothing about the line that breaks it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..tasks import Task, make_task
from ..tasks.tokens import check_tags
from .dataset import Dataset

log = logging.getLogger("headstart")

CONLL_EXTENSIONS = {".conll", ".bio", ".iob", ".iob2", ".bioes"}
SNIFF_LINES = 200  # lines a .txt file is judged on
TOKEN_COLUMNS = ("tokens", "words", "item")  # item: an (items, labels) pair of lists given in memory
TAG_COLUMNS = ("tags", "ner_tags", "labels", "label")


def _looks_like_tag(value: str) -> bool:
    return value == "O" or (len(value) > 2 and value[1] == "-" and value[0] in "BIES")


def is_conll_file(path: Path) -> bool:
    """A CoNLL-style file: by its extension, or a .txt file whose first lines are `token ... tag` lines with at
    least one entity tag."""
    if not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix in CONLL_EXTENSIONS:
        return True
    if suffix != ".txt":
        return False
    try:
        with path.open(encoding="utf-8") as f:
            lines = [line.split() for _, line in zip(range(SNIFF_LINES), f) if line.strip()]
    except (UnicodeDecodeError, OSError):
        return False
    lines = [cols for cols in lines if cols[0] != "-DOCSTART-"]
    return (bool(lines) and all(len(cols) >= 2 and _looks_like_tag(cols[-1]) for cols in lines)
            and any(cols[-1] != "O" for cols in lines))


def read_conll_sentences(path: Path) -> tuple[list[list[str]], list[list[str]], list[list[int]]]:
    """(words, tags, line numbers) per sentence of a CoNLL file; one-line errors for a file that is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") from None
    words: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[list[int]] = []
    current: tuple[list[str], list[str], list[int]] = ([], [], [])
    width: tuple[int, int] | None = None  # (columns, the first line that had them)
    for number, line in enumerate(text.splitlines(), 1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if current[0]:
                words.append(current[0])
                tags.append(current[1])
                lines.append(current[2])
                current = ([], [], [])
            continue
        if len(columns) < 2:
            raise DataError(f"{path}: line {number} ({line.strip()[:40]!r}) has no tag: a CoNLL file holds a token "
                            "and its tag (in the last column) on each line")
        if width is None:
            width = (len(columns), number)
        elif len(columns) != width[0]:
            raise DataError(f"{path}: line {number} has {len(columns)} columns but line {width[1]} has {width[0]}: "
                            "every token line needs the same columns (a token with a space in it?)")
        current[0].append(columns[0])
        current[1].append(columns[-1])
        current[2].append(number)
    if current[0]:
        words.append(current[0])
        tags.append(current[1])
        lines.append(current[2])
    if not words:
        raise DataError(f"{path} holds no tokens: a CoNLL file has one token and its tag per line")
    return words, tags, lines


def tagged_dataset(words: list[list[str]], tags: list[list[str]], locate: Any, where: str,
                   classes: Sequence[str] | None, task: Task | None, name: str) -> Dataset:
    """A Dataset of sentences (words joined by spaces) and their checked tags for the `tokens` task."""
    task = task or make_task("tokens")
    if not task.per_token:
        raise DataError(f"{where} holds a tag per word, but --task {task.name} needs one label per item: use "
                        "--task tokens (or leave --task out)")
    tags, repaired = check_tags(tags, locate, getattr(task, "repair_tags", False))
    if repaired:
        log.warning("%s: %d tag(s) that continued no entity (I-X after O or another type) now start one", where,
                    repaired)
    labels, classes = task.encode(tags, where, ["tags"], classes)
    return Dataset("text", [" ".join(w) for w in words], labels, list(classes), name=name, task=task)


def read_conll(path: Path, classes: Sequence[str] | None = None, task: Task | None = None) -> Dataset:
    """A CoNLL file as a Dataset of sentences (see the module's docstring)."""
    words, tags, lines = read_conll_sentences(path)
    return tagged_dataset(words, tags, lambda s, w: f"{path}: line {lines[s][w]}", str(path), classes, task,
                          path.stem)


def _pick(columns: Sequence[str], names: Sequence[str], role: str, where: Any) -> str:
    by_lower = {str(c).lower(): str(c) for c in columns}
    found = next((by_lower[n] for n in names if n in by_lower), None)
    if found is None:
        raise DataError(f"{where} has no {role} column (looked for {', '.join(names)}; columns: "
                        f"{', '.join(map(str, columns))}): token tagging needs a column of word lists and one of "
                        "tag lists (JSON lists)")
    return found


def _as_list(value: Any, where: Any, row: int, column: str) -> list[str]:
    """A cell holding a list: a JSON list written as text (CSV), or a list (JSONL, Parquet)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where}: row {row} of column '{column}' is not a JSON list ({value[:40]!r})") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(v, str) and v and not any(c.isspace() for c in v)
                                             for v in value):
        raise DataError(f"{where}: row {row} of column '{column}' must be a list of non-empty strings without "
                        "spaces")
    return value


def read_token_table(df: Any, where: Any, classes: Sequence[str] | None, task: Task | None, name: str) -> Dataset:
    """A table with a column of word lists and one of tag lists as a Dataset of sentences."""
    words_column = _pick(df.columns, TOKEN_COLUMNS, "tokens", where)
    tags_column = _pick(df.columns, TAG_COLUMNS, "tags", where)
    words, tags, rows = [], [], []
    for row, (w, t) in enumerate(zip(df[words_column].tolist(), df[tags_column].tolist()), 1):
        w, t = _as_list(w, where, row, words_column), _as_list(t, where, row, tags_column)
        if len(w) != len(t):
            raise DataError(f"{where}: row {row} has {len(w)} tokens but {len(t)} tags")
        if w:
            words.append(w)
            tags.append(t)
            rows.append(row)
    if not words:
        raise DataError(f"{where} has no row with tokens")
    return tagged_dataset(words, tags, lambda s, i: f"{where}: row {rows[s]}, token {i + 1}", str(where), classes,
                          task, name)
