"""Texts for an exported graph: the saved tokenizer (Hugging Face `tokenizers`, no transformers, no torch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .._util import inside
from ..errors import ArtifactError, DataError
from .codec_base import InputCodec, register_codec, too_long_for_a_path, validate_preprocessing

TEXT_FILE_EXTENSIONS = frozenset({".txt", ".text"})
MAX_TEXT_CHARS = 100_000  # far beyond any token limit; longer is a mistake (a file pasted as one text)
# Length buckets (`length_buckets`): a graph call costs about as much as this many padded tokens besides its
# tokens, and takes at most this many rows. Measured with minilm int8 and fp32 in ONNX Runtime on SST-2 sentences
# (benchmarks/RESULTS.md, issue 27): CPU time per sentence 7.5 ms in calls of 32 padded to the longest, 3.1 ms
# sorted by length in calls of 4, 3.5 ms in calls of 8, 4.1 ms one by one; a call of 32 costs more per token.
CALL_OVERHEAD_TOKENS = 12
BUCKET_ROWS = 8


class TextPreprocessing(BaseModel):
    """What the text codec reads from the sidecar, checked at load."""

    model_config = ConfigDict(extra="allow", strict=True)

    tokenizer: str = Field(min_length=1)
    max_length: int = Field(ge=1)
    pad_id: int = Field(ge=0)
    pad_token: str


@register_codec
class TextCodec(InputCodec):
    modality = "text"
    takes_json_strings = True

    def __init__(self, preprocessing: dict[str, Any], folder: Path):
        super().__init__(preprocessing, folder)
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        """The tokenizer saved beside the graph, loaded on first use (serving a PyTorch model never needs it)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            file = inside(self.folder, self.preprocessing["tokenizer"], "preprocessing.tokenizer")
            if not file.is_file():
                raise ArtifactError(f"{file} is missing: the exported text model needs its tokenizer beside the graph "
                                    "(export again)")
            try:
                tokenizer = Tokenizer.from_file(str(file))
            except Exception as e:  # the tokenizers library raises plain Exceptions for damaged files
                raise ArtifactError(f"{file} is not a readable tokenizer ({str(e).splitlines()[0][:200]}): export "
                                    "again") from None
            tokenizer.enable_truncation(int(self.preprocessing["max_length"]))
            tokenizer.no_padding()  # `feeds` pads each length bucket to its own longest text
            self._tokenizer = tokenizer
        return self._tokenizer

    def check_files(self) -> None:
        self.tokenizer  # noqa: B018  (loads it)

    def check_preprocessing(self) -> None:
        validate_preprocessing(TextPreprocessing, self.preprocessing)
        inside(self.folder, self.preprocessing["tokenizer"], "preprocessing.tokenizer")

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"]

    def decode_json(self, value: Any) -> str:
        if not isinstance(value, str):
            raise DataError(f"expected a string, got {type(value).__name__}")
        if len(value) > MAX_TEXT_CHARS:
            raise DataError(f"the text is {len(value):,} characters long; the limit is {MAX_TEXT_CHARS:,}")
        try:
            value.encode("utf-8")  # JSON's "\ud800" escape makes a lone surrogate, which no tokenizer takes
        except UnicodeEncodeError as e:
            raise DataError(f"the text holds a lone surrogate ({value[e.start]!r}) at character {e.start}: not "
                            "valid Unicode") from None
        return value

    def expand_input(self, raw: str) -> list:
        path = Path(raw).expanduser()
        if too_long_for_a_path(path):  # longer than any file name: a literal text
            return [raw]
        if path.is_file() and path.suffix.lower() in TEXT_FILE_EXTENSIONS:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") from e
            return [line.strip() for line in lines if line.strip()]
        if path.is_dir():
            raise DataError(f"{raw} is a folder, but this model takes texts: give texts or .txt files")
        if path.is_file():  # a table or an image given to a text model: never predict on the file's name
            raise DataError(f"{raw} is a {path.suffix or 'file'} file; with an exported graph give texts, .txt files "
                            "(one text a line) or - for lines on stdin (tables: --runtime torch)")
        return [raw]

    def prepare(self, item: Any) -> str:
        if not isinstance(item, str):
            raise DataError(f"expected a text, got {type(item).__name__}")
        return item

    def sort_key(self, item: Any) -> int:
        return len(item) if isinstance(item, str) else 0

    def feeds(self, prepared: Sequence[str]) -> dict[str, np.ndarray]:
        return self._padded([e.ids for e in self.tokenizer.encode_batch(list(prepared))])

    def batches(self, prepared: Sequence[Any], batch_size: int) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """All the texts tokenized in one call of the Rust tokenizer, then run in length buckets: sorted by token
        count and cut where `length_buckets` says, so that a call pads little (SST-2 sentences of 5 to 60
        tokens padded to the longest of 32 cost 2.4x the CPU time of the same sentences bucketed)."""
        ids = [e.ids for e in self.tokenizer.encode_batch(list(prepared))]
        order = sorted(range(len(ids)), key=lambda k: len(ids[k]))
        start = 0
        for end in length_buckets([len(ids[k]) for k in order], min(batch_size, BUCKET_ROWS)):
            rows = order[start:end]
            yield rows, self._padded([ids[k] for k in rows])
            start = end

    def _padded(self, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """input_ids and attention_mask for token id lists, padded to the longest of them."""
        longest = max((len(row) for row in ids), default=0)
        input_ids = np.full((len(ids), longest), int(self.preprocessing["pad_id"]), dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        for r, row in enumerate(ids):
            input_ids[r, :len(row)] = row
            mask[r, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


def length_buckets(lengths: Sequence[int], max_rows: int, call_overhead: int = CALL_OVERHEAD_TOKENS) -> list[int]:
    """Where graph calls over items of ascending `lengths` end, so that the padded tokens plus `call_overhead` per
    call are fewest, with at most `max_rows` items a call.

    Hand-written (a dynamic programme over the sorted lengths, O(n * max_rows)) because batching libraries cut
    every `max_rows` items or by a fixed length grid; here a call of similar lengths stays together and a long
    outlier gets a call of its own only when its padding would cost more than a call."""
    n, max_rows = len(lengths), max(1, max_rows)
    best, cut = [0] * (n + 1), [0] * (n + 1)  # fewest padded tokens for the first `end` items; their last call's start
    for end in range(1, n + 1):
        best[end], cut[end] = min((best[start] + call_overhead + (end - start) * lengths[end - 1], start)
                                  for start in range(max(0, end - max_rows), end))
    ends, end = [], n
    while end > 0:
        ends.append(end)
        end = cut[end]
    return ends[::-1]
