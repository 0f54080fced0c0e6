"""The deployment side of a modality: how an upload, a JSON value or a command-line argument becomes an item,
and how items become the named arrays an exported graph takes.

Why beside `headstart.modalities` rather than inside it: the modality modules build PyTorch datasets and import
torch, and a deployment must not need torch. A modality that can be served registers a codec here under its own
name (`@register_codec`); nothing outside asks "which modality?". The preprocessing a codec applies is read from
what the export recorded (`preprocessing` in the graph's sidecar JSON), never from the training code.
"""

from __future__ import annotations

import errno
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ValidationError

from ..errors import ArtifactError, DataError
from .members import StoredItem, tar_members


@dataclass(frozen=True)
class DecodeLimits:
    """How large one uploaded item may decode to, checked from its header before decoding (the body limit says
    nothing about it: a 140 kB PNG of 12000 x 12000 pixels decodes to 432 MB, a 673 kB FLAC of an hour of
    silence to 1.4 GB). `setting` names what sets each limit, for the error message."""

    max_pixels: int = 40_000_000  # a 40-megapixel photo: 120 MB as RGB (JPEGs decode reduced, see ImageCodec)
    max_audio_seconds: float = 600.0  # as runtime.audio_codec.MAX_AUDIO_SECONDS
    pixels_setting: str = "--max-pixels"
    audio_setting: str = "--max-audio-seconds"


class InputCodec(ABC):
    """Decodes items of one modality for serving and turns a batch of them into graph inputs.

    An instance is made per exported graph: `preprocessing` is the dict the export recorded, `folder` the
    directory of the graph (where files such as a tokenizer sit beside it).
    """

    modality: ClassVar[str]
    takes_json_strings: ClassVar[bool] = False  # POST /predict accepts {"inputs": ["...", ...]}
    takes_uploads: ClassVar[bool] = False  # POST /predict accepts multipart `files`
    raw_media_type: ClassVar[str | None] = None  # POST /predict accepts one raw body of this type ("image/*")

    # What `decode_upload` lets through; the server replaces it with the limits it was started with.
    decode_limits: DecodeLimits = DecodeLimits()

    def __init__(self, preprocessing: dict[str, Any], folder: Path):
        self.preprocessing = preprocessing
        self.folder = folder

    def check_files(self) -> None:
        """Raise ArtifactError now if a file the preprocessing needs beside the graph is missing (none by default)."""
        return None

    def check_preprocessing(self) -> None:
        """Raise ArtifactError naming the field when the recorded preprocessing cannot be applied (an image size of
        0, a mean that is not numbers): at load, not as a failure of every item (nothing checked by default)."""
        return None

    def input_names(self) -> list[str] | None:
        """The names of the graph inputs `feeds` makes (None: not known before the first batch)."""
        return None

    def check_graph(self, inputs: dict[str, list[int | None]]) -> None:
        """Raise ArtifactError when the graph's inputs (name -> shape, None for a dynamic axis) cannot take what
        this preprocessing makes (an image graph for another image size); nothing checked by default."""
        return None

    def decode_upload(self, data: bytes, filename: str) -> Any:
        """An item from the bytes of an uploaded file; raises DataError saying why it cannot be read."""
        raise DataError(f"this model does not take file uploads (it takes {self.modality} inputs as JSON)")

    def decoded_bytes(self, item: Any) -> int:
        """Memory an item from `decode_upload` or `decode_json` holds (the server bounds the sum per request)."""
        return int(getattr(item, "nbytes", 0))

    def decode_json(self, value: Any) -> Any:
        """An item from one element of a JSON `inputs` list; raises DataError saying what was expected."""
        raise DataError(f"this model takes {self.modality} files as multipart `files`, not JSON inputs")

    @abstractmethod
    def expand_input(self, raw: str) -> list:
        """Items named by one command-line argument (a file, a folder, a literal text ...)."""

    @abstractmethod
    def prepare(self, item: Any) -> Any:
        """One item made ready for batching (decoded, resized ...); raises on an unreadable item."""

    @abstractmethod
    def feeds(self, prepared: Sequence[Any]) -> dict[str, np.ndarray]:
        """The graph's named inputs for a batch of prepared items."""

    def sort_key(self, item: Any) -> int:
        """Items with close keys are batched together (e.g. texts of similar length, so little goes to padding)."""
        return 0

    def batch_ends(self, prepared: Sequence[Any], batch_size: int) -> list[int]:
        """Where the graph calls over `prepared` (sorted by `sort_key`) end: every `batch_size` items, unless the
        modality bounds a batch otherwise (audio: by seconds of padded audio)."""
        return [*range(batch_size, len(prepared), batch_size), len(prepared)] if len(prepared) else []

    def batches(self, prepared: Sequence[Any], batch_size: int) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """The graph calls over `prepared`: for each, the positions in `prepared` it holds and its feeds; by
        default sorted by `sort_key` and cut at `batch_ends` (text overrides this: length buckets)."""
        order = sorted(range(len(prepared)), key=lambda k: self.sort_key(prepared[k]))
        start = 0
        for end in self.batch_ends([prepared[k] for k in order], batch_size):
            yield order[start:end], self.feeds([prepared[k] for k in order[start:end]])
            start = end


def validate_preprocessing(schema: type[BaseModel], preprocessing: dict[str, Any]) -> BaseModel:
    """`preprocessing` read by `schema`; ArtifactError naming the first bad field."""
    try:
        return schema.model_validate(preprocessing)
    except ValidationError as e:
        first = e.errors()[0]
        raise ArtifactError(f"field 'preprocessing.{'.'.join(map(str, first['loc']))}': {first['msg']}") from None


def too_long_for_a_path(path: Path) -> bool:
    """True when the system refuses `path` as a file name (a name over 255 bytes, a path over 4096): then it can
    only be a literal text, never a missing file. Hand-written because pathlib's exists()/is_file() raise
    OSError(ENAMETOOLONG) instead of answering False."""
    try:
        path.exists()
    except OSError as e:
        return e.errno == errno.ENAMETOOLONG
    return False


def expand_files(raw: str, extensions: frozenset[str], noun: str, takes: str,
                 check: Callable[[Path], None] | None = None) -> list[Path]:
    """The files one command-line argument names: a folder's files with `extensions` (recursively, sorted,
    hidden ones left out) or one file; a folder of tar shards (WebDataset style, no such files beside them) or
    one .tar file: the members with `extensions`, shard by shard in name order and each in the tar's order, as
    references to their bytes. `noun` names them in "contains no image files"; `takes` says what the model takes
    when the path does not exist; `check` may refuse a file first (one of another modality)."""
    path = Path(raw).expanduser()
    if too_long_for_a_path(path):
        raise DataError(f"input not found: {raw[:60]}... is longer than a file name can be ({takes})")
    if path.is_dir():
        found: list = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                             and not p.name.startswith("."))
        shards = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".tar")
        if not found and shards:
            found = [member for shard in shards for member in _shard_members(shard, extensions, noun)]
        if not found:
            raise DataError(f"{path} contains no {noun} files (looked for {', '.join(sorted(extensions))})")
        return found
    if path.is_file() and path.suffix.lower() == ".tar":
        return _shard_members(path, extensions, noun)
    if check is not None:
        check(path)
    if path.is_file():
        return [path]
    raise DataError(f"input not found: {path} ({takes})")


def _shard_members(shard: Path, extensions: frozenset[str], noun: str) -> list[StoredItem]:
    """A tar shard's {noun} members, or a one-line error naming the shard."""
    try:
        members: list[StoredItem] = list(tar_members(shard, extensions))
    except (OSError, tarfile.TarError) as e:
        raise DataError(f"{shard} cannot be read as an uncompressed tar file ({e})") from None
    if not members:
        raise DataError(f"{shard} holds no {noun} files (looked for {', '.join(sorted(extensions))})")
    return members


CODECS: dict[str, type[InputCodec]] = {}


def register_codec(cls: type[InputCodec]) -> type[InputCodec]:
    """Class decorator: the codec for items of the modality named by `cls.modality`."""
    CODECS[cls.modality] = cls
    return cls


def get_codec(modality: str) -> type[InputCodec]:
    try:
        return CODECS[modality]
    except KeyError:
        raise DataError(f"no deployment codec for {modality} inputs (known: {', '.join(CODECS)})") from None
