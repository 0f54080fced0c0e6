"""Items stored inside a larger file (a member of a tar shard, a cell of a Parquet file): small references that
are read, one item at a time, only when the item is decoded or digested, so a data set bigger than memory is a
list of references rather than of decoded items.

Beside the codecs (no torch) because the image and audio decoders read them: `read_image` and `load_audio`
take a `StoredItem` as they take a path.
"""

from __future__ import annotations

import functools
import io
import tarfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StoredItem:
    """An item's bytes, somewhere inside a file; `read` fetches them, `str` names the item in messages."""

    __slots__ = ()

    def read(self) -> bytes:
        raise NotImplementedError

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.read())


@dataclass(frozen=True, slots=True)
class ShardMember(StoredItem):
    """A member of an uncompressed tar file: `size` bytes at `offset` (tarfile's `offset_data`)."""

    shard: str
    name: str
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.shard} ends inside {self.name} (it was shortened after it was indexed)")
        return data

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"


def tar_members(shard: Path, extensions: Collection[str]) -> list[ShardMember]:
    """The members of an uncompressed tar file whose names end with one of `extensions` (lower case, with the dot),
    in the tar's order, as references: its headers are read, not its items. Raises OSError or tarfile.TarError
    when the file is not a readable tar."""
    with tarfile.open(shard, "r:") as tar:
        return [ShardMember(str(shard), m.name, m.offset_data, m.size) for m in tar
                if m.isfile() and Path(m.name).suffix.lower() in extensions]


@dataclass(frozen=True, slots=True)
class ParquetCell(StoredItem):
    """The bytes in one cell of a Parquet file: row `row` of row group `row_group`, in `column` (and the struct
    `field` of it, as Hugging Face datasets store an image as {bytes, path}; "" for a plain binary column)."""

    path: str
    row_group: int
    row: int
    column: str
    field: str = ""

    def read(self) -> bytes:
        value = _row_group_column(self.path, self.row_group, self.column, self.field)[self.row].as_py()
        if value is None:
            raise ValueError(f"{self} is empty (a missing value)")
        return bytes(value)

    def __str__(self) -> str:
        return f"{self.path}:row group {self.row_group}, row {self.row}"


@functools.lru_cache(maxsize=1)
def _row_group_column(path: str, row_group: int, column: str, field: str) -> Any:
    """One row group's column, kept while the items of that row group are read (a Parquet file is read by row
    group and column chunk, not by cell; items are read in order, so one cached row group serves a run of them).
    Memory is then bounded by the largest row group's bytes, not by the file's."""
    import pyarrow.parquet as pq

    values = pq.ParquetFile(path).read_row_group(row_group, columns=[column]).column(0).combine_chunks()
    return values.field(field) if field else values
