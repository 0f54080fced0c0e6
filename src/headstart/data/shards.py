"""Data bigger than memory: a folder of WebDataset-style tar shards, or a Parquet file of image/audio bytes, read
as references (`runtime.members`) to the bytes of each item, which are read and decoded only when the item is
embedded or trained on. What stays in memory is one small reference and one label per item.

Tar shards follow the WebDataset convention: the members of one item share a key (the member's path up to the
first dot of its file name) and differ by extension: `KEY.png` (or jpg, wav ...: the item) with `KEY.cls` (a
class index or name), or `KEY.label` / `KEY.txt` (a class name) or `KEY.json` ({"label": ...} or {"class": ...}).
Shards named `train-*.tar`, `val-*.tar`, `test-*.tar` are those splits.

Hand-written on the standard library's `tarfile` rather than the `webdataset` package: webdataset streams the
shards sequentially (an iterable data set), while headstart needs random access to items (stratified splits,
a cache looked up item by item, shuffled training). Indexing each shard once with `tarfile` gives every member's
data offset and size, and an item is then one seek and one read.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..modalities import MODALITIES, Modality, ensure_same_modality
from ..runtime.members import ParquetCell, ShardMember
from ..tasks import Task
from .dataset import Dataset
from .tables import FILE_COLUMNS, LABEL_COLUMNS, TEXT_COLUMNS

log = logging.getLogger("headstart")

LABEL_EXTENSIONS = (".cls", ".label", ".txt", ".json")  # the first a key has gives its label
SHARD_SUFFIXES = (".tar",)
COMPRESSED_SHARDS = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


def shard_files(folder: Path) -> list[Path]:
    """The tar shards directly in `folder`, in name order (compressed tars are refused: they cannot be sought)."""
    if not folder.is_dir():
        return []
    compressed = sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(COMPRESSED_SHARDS))
    shards = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SHARD_SUFFIXES))
    if compressed and not shards:
        raise DataError(f"{folder} holds compressed tar files ({', '.join(compressed[:3])}): items are read from "
                        "shards by offset, which a compressed tar does not allow; write uncompressed .tar shards")
    return shards


def is_shard_folder(path: Path) -> bool:
    return bool(shard_files(path))


def shard_splits(shards: Sequence[Path], split_names: Mapping[str, str]) -> dict[str, list[Path]]:
    """Shards grouped by the split their name starts with (train-000.tar, val_1.tar, test.tar); all of them as
    "train" when none is named so. Shards named for no split beside split-named ones are an error."""
    groups: dict[str, list[Path]] = {}
    for shard in shards:
        prefix = re.split(r"[-_.0-9]", shard.name.lower(), maxsplit=1)[0]
        groups.setdefault(split_names.get(prefix, ""), []).append(shard)
    if set(groups) == {""}:
        return {"train": groups[""]}
    if "" in groups or "train" not in groups:
        odd = ", ".join(p.name for p in groups.get("", [])) or "none is named train-*.tar"
        raise DataError(f"{shards[0].parent}: some shards are named for a split (train-*.tar, val-*.tar, test-*.tar) "
                        f"and some not ({odd}): name every shard for its split, or none")
    return groups


def _label_text(extension: str, data: bytes) -> str:
    text = data.decode("utf-8").strip()
    if extension == ".json":
        record = json.loads(text)
        value = next((record[k] for k in ("label", "class", "cls") if isinstance(record, dict) and k in record), None)
        if value is None:
            raise ValueError('the JSON has no "label" or "class" field')
        return str(value)
    if not text:
        raise ValueError("the label is empty")
    return text


def index_shard(shard: Path, extensions: frozenset[str]) -> tuple[list[ShardMember], list[str], list[tuple[str, str]]]:
    """The items of one tar shard (members with one of `extensions`) as references, their label texts, and
    (item, reason) for those left out (no label, an unreadable label). Reads the tar's headers and the small
    label members only."""
    items: dict[str, ShardMember] = {}
    labels: dict[str, str] = {}
    bad_labels: dict[str, str] = {}
    name = str(shard)
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, dot, rest = base.partition(".")
                key, extension = f"{folder}/{stem}" if folder else stem, f"{dot}{rest}".lower()
                if extension in extensions:
                    items[key] = ShardMember(name, member.name, member.offset_data, member.size)
                elif extension in LABEL_EXTENSIONS and key not in labels:
                    try:
                        labels[key] = sys.intern(_label_text(extension, tar.extractfile(member).read()))
                    except (ValueError, UnicodeDecodeError) as e:
                        bad_labels[key] = f"unreadable label {member.name} ({e})"
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{shard} cannot be read as a tar file ({e})") from None
    kept = [(item, labels[key]) for key, item in items.items() if key in labels]
    skipped = [(str(item), bad_labels.get(key, "no label member (.cls, .label, .txt or .json) with its key"))
               for key, item in items.items() if key not in labels]
    return [item for item, _ in kept], [label for _, label in kept], skipped


def shard_modality(shards: Sequence[Path], sample: int = 2000) -> Modality:
    """The modality whose files the first shard holds most of (read from its first `sample` headers)."""
    counts = {m: 0 for m in MODALITIES.values() if m.file_extensions}
    try:
        with tarfile.open(shards[0], "r:") as tar:
            for member, _ in zip(tar, range(sample)):
                suffix = Path(member.name).suffix.lower()
                for m in counts:
                    counts[m] += suffix in m.file_extensions
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{shards[0]} cannot be read as a tar file ({e})") from None
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        known = ", ".join(sorted(e for m in counts for e in m.file_extensions))
        raise DataError(f"{shards[0]} holds no item files (looked for {known} members beside .cls/.txt labels)")
    return best


def _class_names(texts: Sequence[str]) -> list[str]:
    """Class names in a stable order: by number when every label is an integer (class indices), else by name."""
    names = set(texts)
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def labeled_references(items: list, texts: list[str], modality: str, classes: Sequence[str] | None, where: str,
                       name: str, skipped: list[tuple[str, str]], task: Task | None) -> Dataset:
    """A Dataset of references with class labels from their label texts (mapped onto `classes` when given)."""
    if task is not None and not task.one_class_per_item:
        raise DataError(f"{where}: shards and Parquet item files give one class per item; --task {task.name} needs "
                        "a table with target columns")
    if not items:
        raise DataError(f"{where} has no labeled items" + (f" ({len(skipped)} without a label, e.g. {skipped[0][0]}: "
                                                            f"{skipped[0][1]})" if skipped else ""))
    names = list(classes) if classes is not None else _class_names(texts)
    if classes is None and len(names) < 2:
        raise DataError(f"{where} has only one class ({names[0]}): a classifier needs at least two")
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(texts) - set(index))
    if unknown:
        raise DataError(f"{where} has classes not seen in training: {', '.join(unknown[:10])}")
    if skipped:
        log.warning("%s: %d item(s) left out, e.g. %s (%s)", where, len(skipped), *skipped[0])
    labels = np.fromiter((index[t] for t in texts), dtype=np.int64, count=len(texts))
    return Dataset(modality, items, labels, names, name=name, skipped=skipped)


def read_shards(shards: Sequence[Path], classes: Sequence[str] | None = None, expected_modality: str | None = None,
                task: Task | None = None, name: str = "shards") -> Dataset:
    """One split's tar shards as a Dataset of `ShardMember` references."""
    modality = shard_modality(shards)
    if expected_modality is not None:
        ensure_same_modality(expected_modality, modality.name, "this model", "the data are")
    items: list[ShardMember] = []
    texts: list[str] = []
    skipped: list[tuple[str, str]] = []
    for shard in shards:
        shard_items, shard_labels, shard_skipped = index_shard(shard, modality.file_extensions)
        items += shard_items
        texts += shard_labels
        skipped += shard_skipped
    where = f"{shards[0].parent} ({len(shards)} shard{'s' * (len(shards) > 1)})"
    return labeled_references(items, texts, modality.name, classes, where, name, skipped, task)


# Magic numbers of the item files a bytes column may hold, for its modality.
_MAGIC = ((b"\x89PNG", "image"), (b"\xff\xd8\xff", "image"), (b"GIF8", "image"), (b"BM", "image"),
          (b"II*\x00", "image"), (b"MM\x00*", "image"), (b"fLaC", "audio"), (b"OggS", "audio"), (b"ID3", "audio"))


def _bytes_modality(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] in (b"WEBP", b"WAVE"):
        return "image" if data[8:12] == b"WEBP" else "audio"
    return next((m for magic, m in _MAGIC if data.startswith(magic)), None)


def parquet_bytes_column(path: Path) -> tuple[str, str] | None:
    """(column, struct field) of a Parquet file's item bytes: a binary column, or a struct with a binary `bytes`
    field (Hugging Face datasets' Image and Audio); None when it has none (a table of texts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError):
        return None
    labels = {c.lower() for c in LABEL_COLUMNS}
    binary = [f.name for f in schema if (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
              and f.name.lower() not in labels]
    structs = [f.name for f in schema if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0]
    named = [c for c in FILE_COLUMNS if c in binary + structs]
    texts = {c.lower() for c in TEXT_COLUMNS} & {f.name.lower() for f in schema}
    if not named and texts:  # a table of texts with some other binary column: the table reader's to judge
        return None
    column = named[0] if named else next(iter(binary + structs), None)
    if column is None:
        return None
    return column, "bytes" if column in structs else ""


def read_parquet_items(path: Path, label_column: str | None = None, classes: Sequence[str] | None = None,
                       expected_modality: str | None = None, task: Task | None = None) -> Dataset:
    """A Parquet file of image or audio bytes (one column) and labels as a Dataset of `ParquetCell` references;
    only the label column is read now."""
    import pyarrow.parquet as pq

    column, field = parquet_bytes_column(path)  # type: ignore[misc]
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    label = label_column or next((c for c in LABEL_COLUMNS if c in names), None)
    if label is None or label not in names:
        looked = f"not found: {label_column}" if label_column else f"looked for {', '.join(LABEL_COLUMNS)}"
        raise DataError(f"{path}: no label column ({looked}); name it with --label-column")
    items: list[ParquetCell] = []
    texts: list[str] = []
    skipped: list[tuple[str, str]] = []
    first: bytes | None = None
    for group in range(parquet.num_row_groups):
        values = parquet.read_row_group(group, columns=[label]).column(0).to_pylist()
        for row, value in enumerate(values):
            cell = ParquetCell(str(path), group, row, column, field)
            if value is None:
                skipped.append((str(cell), "no label"))
                continue
            items.append(cell)
            texts.append(sys.intern(str(value)))
        if first is None and items:
            try:
                first = items[0].read()
            except (ValueError, OSError):
                first = b""
    modality = _bytes_modality(first or b"") or ("audio" if "audio" in column.lower() else "image")
    if expected_modality is not None:
        ensure_same_modality(expected_modality, modality, "this model", "the data are")
    return labeled_references(items, texts, modality, classes, str(path), path.stem, skipped, task)
