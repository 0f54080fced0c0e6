"""Texts: strings, tokenised by the backbone and batched by similar length."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..runtime.codec_base import too_long_for_a_path
from .base import Batch, Modality, epoch_seed, item_label, modality_of_file, register_modality, stack_labels

TEXT_FILE_EXTENSIONS = frozenset({".txt", ".text"})
FINGERPRINT_BYTES = 64  # the length of a text's content fingerprint (its folded text's digest), one column a byte


def fold_text(text: str) -> str:
    """`text` with case folded and punctuation (Unicode category P: . , ; : ! ? ' " - ( ) % # ...) and spacing
    dropped, so that "didn't", "didnt" and "did n't", or "top-up" and "top up", fold alike (a new user's trial on
    Banking77 found copies that folding punctuation into spaces missed). Symbols (category S: emoji, + = $ ...) are
    kept: "great 😀" and "great 😡" stay apart. Texts that differ only in punctuation (":)" against ":(") fold
    alike; where their labels differ the audit lists them as conflicting and its clean table keeps both."""
    return "".join(c for c in text.casefold() if not (c.isspace() or unicodedata.category(c).startswith("P")))


class _Texts(torch.utils.data.Dataset):
    def __init__(self, texts: Sequence[str], labels: np.ndarray):
        self.texts = texts
        self.labels = labels

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, Any]:
        return self.texts[i], item_label(self.labels, i)


def read_text_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") from e
    return [line.strip() for line in lines if line.strip()]


def _length_grouped_sampler(batch_size: int, lengths: list[int], seed: int) -> torch.utils.data.Sampler:
    """Hugging Face's LengthGroupedSampler, reshuffled from (seed, epoch) at every epoch so that a resumed run
    sees the order an uninterrupted one would have (Lightning calls `set_epoch`)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochLengthGrouped(LengthGroupedSampler):
        def set_epoch(self, epoch: int) -> None:
            self.generator.manual_seed(epoch_seed(seed, epoch))

    return EpochLengthGrouped(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(epoch_seed(seed, 0)))


@register_modality
class TextModality(Modality):
    name = "text"
    noun = "text"
    unit = "text"
    reads_text_tables = True
    suggested_backbone = "minilm"
    default_batch_size = 128
    content_fingerprint_note = "the text with case, punctuation and spacing folded"
    # Texts that mean the same are near in a sentence encoder even when they are different texts: at 0.9, minilm paired
    # 28% of 3,000 Banking77 queries ("Please help me change my PIN." / "Help me change my PIN.": 0.985) and 7.6% of
    # TREC-6's; at 0.99, 0.5% and 0.07% (benchmarks/near_duplicates.py, RESULTS.md "Issue 24, twelfth round"). Copies
    # with other case, punctuation or spacing are the fingerprints' to find, whatever the backbone.
    near_duplicate_threshold = 0.99

    def content_fingerprints(self, items: Sequence) -> np.ndarray:
        """Unit rows, equal for texts that are equal once case is folded, punctuation dropped and spaces collapsed,
        (`fold_text`) and nearly orthogonal otherwise: each row is the folded text's 64-byte BLAKE2 digest, centred, as a unit
        vector (two different texts reach the audit's 0.99 with a chance far below 1e-20); a text with no words is
        a zero row and matches nothing. A copy with other case or punctuation is then found whatever the backbone
        (benchmarks/RESULTS.md, issue 24: at the embeddings' 0.9, minilm found 98% of such SST-2 copies, mpnet 90%).
        Hand-written because a similarity of character n-grams was not strict enough: hashed trigrams flagged
        hundreds of templated texts that differ in one number (benchmarks/audit_speed.py's items)."""
        rows = np.zeros((len(items), FINGERPRINT_BYTES), dtype=np.float32)
        for i, text in enumerate(items):
            folded = fold_text(str(text))
            if folded:
                digest = hashlib.blake2b(folded.encode("utf-8"), digest_size=FINGERPRINT_BYTES).digest()
                rows[i] = np.frombuffer(digest, dtype=np.uint8) - 127.5
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    def preview_html(self, item: Any, limit: int = 400) -> str:
        import html

        text = str(item)
        return f'<q class="text">{html.escape(text[:limit] + ("..." if len(text) > limit else ""))}</q>'

    def digest(self, item: str) -> bytes:
        return hashlib.blake2b(item.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def extraction_batches(self, backbone: Any, items: Sequence, batch_size: int) -> Iterator[Batch]:
        """Batches of texts of similar token length, so little compute goes to padding."""
        order = np.argsort(backbone.token_lengths(items), kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield backbone.collate([items[i] for i in idx]), idx, []

    def training_loader(self, backbone: Any, items: Sequence, labels: np.ndarray, batch_size: int, train: bool,
                        seed: int = 0) -> Any:
        def collate(batch: list[tuple[str, Any]]):
            texts, ys = zip(*batch)
            return backbone.collate(texts), stack_labels(ys)

        # Batches of similar length (shuffled in groups, as Hugging Face's Trainer does with group_by_length), so
        # little compute goes to padding; validation simply runs in length order.
        lengths = backbone.token_lengths(items)
        if train:
            sampler = _length_grouped_sampler(batch_size, lengths, seed)
        else:
            sampler = sorted(range(len(items)), key=lengths.__getitem__)
        return torch.utils.data.DataLoader(_Texts(items, labels), batch_size=batch_size, sampler=sampler,
                                           collate_fn=collate)

    def expand_input(self, raw: str) -> list:
        """A .txt file gives its lines; a file of another modality is an error; anything else is a literal text."""
        path = Path(raw).expanduser()
        if too_long_for_a_path(path):  # longer than any file name: a literal text
            return [raw]
        if path.is_file() and path.suffix.lower() in TEXT_FILE_EXTENSIONS:
            return read_text_lines(path)
        other = modality_of_file(path)
        if other is not None and other is not self:
            raise DataError(f"{raw} is an {other.noun} file, but this model takes texts: give texts, .txt files or a "
                            "table with a text column")
        if path.is_dir():
            raise DataError(f"{raw} is a folder, but this model takes texts: give texts, .txt files or a table")
        return [raw]
