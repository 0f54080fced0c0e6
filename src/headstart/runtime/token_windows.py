"""Sentences as model windows and back: the pure-Python half of token tagging, shared by the PyTorch model and an
exported graph so that both split words, align sub-words, window and stitch in one way (one implementation).

Each word's tag is read from its first sub-word (the `tokenizers` library's word ids say which sub-word starts
which word). A sentence longer than `max_length` sub-words is cut into windows overlapping by `window_overlap`
sub-words (the tokenizer's truncation with a stride, as transformers' `return_overflowing_tokens` does it), and
each word is taken from the window where it lies farthest from an edge. Torch-free: numpy and `tokenizers` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .entities import WordScores, find_words, split_words

SCORE_BATCH = 64  # windows per model call when scoring


def window_overlap(max_length: int) -> int:
    """Sub-words two neighbouring windows share: a quarter of a window (so each word has context on both sides)."""
    return max(1, (max_length - 2) // 4)


@dataclass
class Window:
    """One model input: its sub-word ids, the sentence it comes from, and the (position, word) of the words it
    owns (their first sub-word, in the window where they are farthest from an edge)."""

    inputs: dict[str, list[int]]
    sentence: int
    owned: list[tuple[int, int]]


@contextlib.contextmanager
def _windowing(tokenizer: Any, max_length: int) -> Iterator[None]:
    """The tokenizer set to cut at `max_length` with the windows' overlap and not to pad, and set back as it was
    afterwards (the exported text codec's tokenizer pads and truncates for whole-text classification)."""
    truncation, padding = tokenizer.truncation, tokenizer.padding
    tokenizer.enable_truncation(max_length, stride=window_overlap(max_length))
    tokenizer.no_padding()
    try:
        yield
    finally:
        if truncation is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(**truncation)
        if padding is not None:
            tokenizer.enable_padding(**padding)


def encode_windows(tokenizer: Any, sentences: Sequence[Sequence[str]], max_length: int,
                   type_ids: bool = False) -> list[Window]:
    """The sentences (lists of words) as windows of at most `max_length` sub-words, overlapping by
    `window_overlap`. `tokenizer`: a `tokenizers.Tokenizer` (a fast transformers tokenizer's `backend_tokenizer`,
    or the tokenizer.json saved beside an exported graph); `type_ids`: windows carry token_type_ids too."""
    if not sentences:
        return []
    with _windowing(tokenizer, max_length):
        encoded = tokenizer.encode_batch([list(s) for s in sentences], is_pretokenized=True)
    windows, best = [], {}
    for sentence, first_encoding in enumerate(encoded):
        for encoding in [first_encoding, *first_encoding.overflowing]:
            k = len(windows)
            inputs = {"input_ids": list(encoding.ids), "attention_mask": list(encoding.attention_mask)}
            if type_ids:
                inputs["token_type_ids"] = list(encoding.type_ids)
            windows.append(Window(inputs, sentence, []))
            word_ids, offsets = encoding.word_ids, encoding.offsets
            content = [j for j, w in enumerate(word_ids) if w is not None]
            if not content:
                continue
            low, high, previous = content[0], content[-1], None
            for j in content:
                word = word_ids[j]
                # A window may start inside a word: its first sub-word there is not the word's (offsets within a
                # word start at 0 only on its first sub-word).
                first = word != previous and (j != low or offsets[j][0] == 0)
                previous = word
                if first:
                    centrality = min(j - low, high - j)
                    key = (sentence, int(word))
                    if key not in best or centrality > best[key][0]:
                        best[key] = (centrality, k, j)
    for (_, word), (_, k, j) in best.items():
        windows[k].owned.append((j, word))
    return windows


def pad_windows(windows: Sequence[Window], pad_id: int, length: int | None = None) -> dict[str, np.ndarray]:
    """A batch of windows as int64 arrays, padded to the longest (or to `length`)."""
    size = length or max(len(w.inputs["input_ids"]) for w in windows)
    batch = {}
    for name in windows[0].inputs:
        fill = pad_id if name == "input_ids" else 0
        batch[name] = np.asarray([w.inputs[name] + [fill] * (size - len(w.inputs[name])) for w in windows], np.int64)
    return batch


def text_words(texts: Sequence[str], words_given: bool) -> list[list[tuple[int, int]]]:
    """Each text's words as (start, end) offsets: labeled data's own (words joined by single spaces), or those
    `find_words` finds in raw text, so that entity offsets are offsets into the input."""
    return [(split_words if words_given else find_words)(t) for t in texts]


def word_scores(texts: Sequence[str], words_given: bool, tokenizer: Any, max_length: int, pad_id: int,
                n_tags: int, run: Callable[[dict[str, np.ndarray]], np.ndarray], batch_size: int | None = None,
                type_ids: bool = False) -> list[WordScores]:
    """Per text, its words and their tag probabilities: the words found, windowed, `run` (a batch of padded
    windows -> windows x sub-words x tags probabilities: the PyTorch model or an exported graph) called on
    `batch_size` windows at a time, and each word's row taken from the window that owns it."""
    texts = [str(t) for t in texts]
    spans = text_words(texts, words_given)
    words = [[t[a:b] for a, b in s] for t, s in zip(texts, spans)]
    probs = [np.zeros((len(w), n_tags), np.float32) for w in words]
    used = [i for i, w in enumerate(words) if w]
    windows = encode_windows(tokenizer, [words[i] for i in used], max_length, type_ids)
    step = batch_size or SCORE_BATCH
    for start in range(0, len(windows), step):
        chunk = windows[start:start + step]
        scores = np.asarray(run(pad_windows(chunk, pad_id)), dtype=np.float32)
        for window, rows in zip(chunk, scores):
            for position, word in window.owned:
                probs[used[window.sentence]][word] = rows[position]
    return [WordScores(t, s, p) for t, s, p in zip(texts, spans, probs)]
