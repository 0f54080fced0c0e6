"""`predict --out FILE`: prediction records streamed into a .jsonl, .csv or .parquet file in bounded memory, by one
process or several (torchrun), resumable after a kill.

How it works, and why this way (the simplest design we found that is correct on every count):

- **Chunks.** The inputs are taken `chunk_items` at a time; memory holds one chunk's records, never all of them.
- **Ranks.** Every rank walks the same chunks and calls `records_for(chunk)`, a collective that returns the
  chunk's records in input order: the torch model already shards its work inside (`embed_items` embeds each
  rank's share and shares the rows), and an exported graph is wrapped in `across_ranks`, which predicts this
  rank's contiguous share of the chunk and gathers the shares in rank order. Only rank 0 writes, so the file has
  one writer, each input one line, and the order is the input's, whatever the number of ranks.
- **Journal.** Rank 0 appends each chunk's records as JSON lines to `FILE.partial` and forces them to disk; the
  job that began it (inputs digest and settings) is recorded beside it in `FILE.partial.json`.
- **Resume.** A rerun of the same job (same inputs and settings, checked against `FILE.partial.json`) keeps the
  journal's complete lines, cuts off a line torn by the kill, and predicts from the first item without a line.
  Another job's journal is an error rather than silently mixed in or thrown away. The number of ranks and the
  chunk size may differ between the runs: the journal counts lines, not chunks.
- **Finish.** The journal becomes FILE in one rename (.jsonl), or is converted chunk by chunk into a temporary
  file that is renamed into place (.csv; .parquet with one row group per chunk). A reader sees no FILE or the
  whole of it; a kill during the conversion leaves the journal whole, so a rerun only converts.

torch is not imported here (the ONNX deployment writes files too); `distributed` imports it only under torchrun.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import distributed
from ..errors import HeadstartError, SettingsError

OUTPUT_FILE_TYPES = (".jsonl", ".csv", ".parquet")
CHUNK_ITEMS = 4096  # items per step: bounds memory (one chunk's records) and the collectives' message size

RecordsFor = Callable[[Sequence], Iterable[dict[str, Any]]]


def check_output_file(path: Path) -> None:
    """Refuse (before any work) an `--out` file of a type this module does not write, or a folder."""
    if path.suffix.lower() not in OUTPUT_FILE_TYPES:
        raise SettingsError(f"--out {path}: give a .csv, .jsonl or .parquet file (got '{path.suffix or 'no extension'}')")
    if path.is_dir():
        raise SettingsError(f"--out {path} is a folder: give a .csv, .jsonl or .parquet file")


def journal_path(path: Path) -> Path:
    """The journal of an unfinished `path`: its records so far, one JSON line each."""
    return path.with_name(path.name + ".partial")


def _job_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial.json")


def across_ranks(records_for: RecordsFor) -> RecordsFor:
    """`records_for` (which predicts whatever it is given, e.g. an exported graph) made a collective: under
    torchrun each rank predicts its contiguous share of the items and every rank gets all the records, in input
    order. With one process it is `records_for` itself."""

    def collective(items: Sequence) -> Iterable[dict[str, Any]]:
        if distributed.world_size() == 1:
            return records_for(items)
        share = distributed.shard(items)
        mine = list(records_for(share)) if len(share) else []
        return [record for shares in distributed.all_gather_object(mine) for record in shares]

    return collective


def write_prediction_file(path: Path, items: Sequence, records_for: RecordsFor, *, settings: dict[str, Any],
                          chunk_items: int = CHUNK_ITEMS) -> tuple[int, int]:
    """Write one record per item of `items`, in their order, to `path` (.jsonl, .csv or .parquet), streamed and
    resumable (see the module's docstring). `records_for(chunk)` gives a chunk's records, and under torchrun must
    be a collective that gives them all on rank 0 (see `across_ranks`); every rank calls this function.
    `settings`: what besides the inputs decides the records (model, options), so that a journal is resumed only
    by the job that began it. Returns (records in the file, records kept from an interrupted run)."""
    check_output_file(path)
    if chunk_items < 1:
        raise SettingsError(f"the chunk size must be at least 1, got {chunk_items}")
    kept = _open_journal(path, _job(items, settings))
    for start in range(kept, len(items), chunk_items):
        chunk = items[start:start + chunk_items]
        records = list(records_for(chunk))
        if len(records) != len(chunk):  # a broken predictor; the journal must stay one line per input
            raise HeadstartError(f"internal error: {len(records)} predictions for {len(chunk)} inputs")
        _append(journal_path(path), records)
    _finish(path)
    return len(items), kept


def _job(items: Sequence, settings: dict[str, Any]) -> dict[str, Any]:
    """What identifies a prediction job: its inputs (count and digest, in order) and settings, as JSON reads back."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(str(item).encode("utf-8", "surrogateescape") + b"\0")
    return json.loads(json.dumps({"inputs": len(items), "inputs_sha256": digest.hexdigest(), "settings": settings},
                                 default=str))


@distributed.on_main
def _open_journal(path: Path, job: dict[str, Any]) -> int:
    """Start the journal, or resume this job's: the number of items it already holds (rank 0 decides, every
    rank gets the number)."""
    from .._util import atomic_write_json

    journal, job_file = journal_path(path), _job_path(path)
    if journal.exists() and journal.stat().st_size:  # an empty journal holds no work to keep
        try:
            recorded = json.loads(job_file.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != job:
            raise HeadstartError(f"{journal} holds predictions of another job (other inputs or settings, or its "
                                 f"{job_file.name} is missing): rerun the command that began it to finish it, or "
                                 "delete it to start over")
        return _complete_lines(journal, job["inputs"])
    _writing(path, lambda: atomic_write_json(job_file, job))
    _writing(path, journal.touch)
    return 0


def _complete_lines(journal: Path, most: int) -> int:
    """How many whole JSON lines open the journal; whatever follows them (a line torn by a kill) is cut off."""
    kept, end = 0, 0
    with open(journal, "r+b") as f:
        for line in f:
            if kept == most or not line.endswith(b"\n"):
                break
            try:
                json.loads(line)
            except ValueError:
                break
            kept, end = kept + 1, end + len(line)
        f.truncate(end)
    return kept


@distributed.on_main
def _append(journal: Path, records: list[dict[str, Any]]) -> None:
    """Add a chunk's records to the journal, on disk before the next chunk starts (so a kill loses at most one)."""

    def append() -> None:
        with open(journal, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
            f.flush()
            os.fsync(f.fileno())

    _writing(journal, append)


@distributed.on_main
def _finish(path: Path) -> None:
    """Put the complete journal in place as `path`, in its format, and remove the journal and its job record."""
    journal = journal_path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        _writing(path, lambda: os.replace(journal, path))
    else:
        with _replacing(path) as temporary:
            (_write_csv if suffix == ".csv" else _write_parquet)(journal, temporary)
        journal.unlink()
    _job_path(path).unlink(missing_ok=True)


def _journal_chunks(journal: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    """The journal's records, `size` at a time."""
    chunk: list[dict[str, Any]] = []
    with open(journal, encoding="utf-8") as f:
        for line in f:
            chunk.append(json.loads(line))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _columns(journal: Path) -> list[str]:
    """The records' fields in the order they first appear (input first: label, score, top_k for a classifier;
    labels, scores for multi-label; values, intervals for a regression), `error` last; one streamed read."""
    seen: dict[str, None] = {"input": None}
    for chunk in _journal_chunks(journal, CHUNK_ITEMS):
        seen.update(dict.fromkeys(k for r in chunk for k in r))
    seen.pop("error", None)
    return [*seen, "error"]


def _write_csv(journal: Path, out: Path) -> None:
    """A column per record field, nested ones (top_k, scores, intervals) as JSON, row by row."""
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_columns(journal), lineterminator="\n")
        writer.writeheader()
        for chunk in _journal_chunks(journal, CHUNK_ITEMS):
            writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
                             for r in chunk)


def _write_parquet(journal: Path, out: Path) -> None:
    """One row group per chunk, nested fields (top_k) as Parquet lists of structs. The schema is read off the
    whole journal first (a chunk of unreadable inputs alone has no label column), so it takes two streamed reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pa.array reads every record's keys (Table.from_pylist without a schema would take the first record's alone)
    schema = _parquet_schema(pa.schema(list(pa.array(chunk).type)) for chunk in _journal_chunks(journal, CHUNK_ITEMS))
    with pq.ParquetWriter(out, schema) as writer:
        for chunk in _journal_chunks(journal, CHUNK_ITEMS):
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))


def _parquet_schema(schemas: Iterable[Any]) -> Any:
    """The chunks' schemas unified (a column null in one chunk takes its type from another): input first, the
    record's own fields in the order they appear, error last."""
    import pyarrow as pa

    found = list(schemas)
    if not found:
        return pa.schema([("input", pa.string())])
    unified = pa.unify_schemas(found, promote_options="permissive")
    order = {"input": 0, "error": 2}  # input first, error last, the others as they appear
    return pa.schema(sorted(unified, key=lambda field: order.get(field.name, 1)))


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` to write, renamed onto `path` when the block ends (removed if it fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # as a plain open() would leave it (mkstemp makes it private)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        _writing(path, lambda: os.replace(temporary, path))
    finally:
        temporary.unlink(missing_ok=True)


def _writing(path: Path, write: Callable[[], Any]) -> Any:
    """Run a file operation for `path`, an OSError told as a one-line error that names the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write()
    except OSError as e:
        raise HeadstartError(f"cannot write {path} ({e.strerror or type(e).__name__}): choose another --out") from None
