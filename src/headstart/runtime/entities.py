"""Entities from per-word tag scores: finding the words of a raw text with their character offsets, and turning
the words' BIO/BIOES tag probabilities into entity records (type, offsets, text span, score).

Torch-free, like the rest of `headstart.runtime`, so that the PyTorch model, an exported graph and the server make
the same records.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# A word of raw text: a run of letters, digits and underscores (an @mention or #hashtag keeps its sign; inner
# hyphens and apostrophes keep "e-mail" and "don't" whole), or any other single non-space character. CoNLL-style
# data put punctuation in words of its own, so "Paris," must become "Paris" and ",". Hand-written because the
# tokenizers' own pre-tokenizers differ by model (BERT splits "@user" and "don't", byte-level BPE keeps spaces);
# a regex gives every backbone the same words and exact character offsets.
WORD = re.compile(r"[@#]?\w+(?:['’\-]\w+)*|[^\w\s]", re.UNICODE)


def find_words(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the words of a raw text (Python string indices: code points)."""
    return [m.span() for m in WORD.finditer(text)]


def split_words(text: str) -> list[tuple[int, int]]:
    """(start, end) of the words of a text whose words are joined by single spaces (how a CoNLL sentence is kept
    as an item), so that each word is exactly a word of the file."""
    spans, start = [], 0
    for word in text.split(" "):
        if word:
            spans.append((start, start + len(word)))
        start += len(word) + 1
    return spans


@dataclass
class WordScores:
    """One text's words (`spans` into `text`) and, per word, the tag probabilities (words x tags; a row of zeros
    for a word the tokenizer gave no sub-word, which counts as O)."""

    text: str
    spans: list[tuple[int, int]]
    probs: np.ndarray

    def tags(self, classes: Sequence[str]) -> list[str]:
        """The most probable tag of each word."""
        return [classes[int(row.argmax())] if row.any() else "O" for row in self.probs]


def _parts(tag: str) -> tuple[str, str]:
    """("B", "PER") of "B-PER"; ("O", "") of "O"."""
    prefix, _, kind = tag.partition("-")
    return (prefix, kind) if kind else ("O", "")


def tag_chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of each entity in a BIO/BIOES tag sequence, read as conlleval and seqeval's
    default mode read it: an I-X or E-X that does not continue an X entity starts one."""
    chunks: list[tuple[str, int, int]] = []
    current: list[Any] | None = None
    for i, tag in enumerate(tags):
        prefix, kind = _parts(tag)
        continues = current is not None and current[0] == kind and prefix in ("I", "E")
        if not continues and current is not None:
            chunks.append(tuple(current))  # type: ignore[arg-type]
            current = None
        if prefix == "O":
            continue
        if continues:
            current[2] = i  # type: ignore[index]
        else:
            current = [kind, i, i]
        if prefix in ("E", "S"):
            chunks.append(tuple(current))  # type: ignore[arg-type]
            current = None
    if current is not None:
        chunks.append(tuple(current))  # type: ignore[arg-type]
    return chunks


def entities(scores: WordScores, classes: Sequence[str]) -> list[dict[str, Any]]:
    """The entities of one text: {type, start, end, text, score}; `start`/`end` are character offsets into the
    input (text[start:end] is the span), `score` the mean probability of the chosen tags over its words."""
    tags = scores.tags(classes)
    found = []
    for kind, first, last in tag_chunks(tags):
        start, end = scores.spans[first][0], scores.spans[last][1]
        probability = float(np.mean([scores.probs[i].max() for i in range(first, last + 1)]))
        found.append({"type": kind, "start": int(start), "end": int(end), "text": scores.text[start:end],
                      "score": round(probability, 6)})
    return found


def entity_record(row: WordScores, classes: Sequence[str], top_k: int, params: dict[str, Any]) -> dict[str, Any]:
    """{entities: [{type, start, end, text, score}]} of one text's word scores."""
    return {"entities": entities(row, classes)}
