"""`audit`: what is wrong with a labeled data set, found on one embedding pass of a pre-trained backbone.

- likely label errors (confident learning on out-of-fold probe probabilities, `label_errors`),
- exact and near duplicates within the data, across the train/validation/test splits that `fit` would make with
  the same seed and sizes (leaks: a test item also in train scores what the model has seen), and between the data
  and a second data set (`against`, e.g. the test set),
- outliers (`outliers`) and pairs of classes that overlap.

The embeddings go through the cache that `fit` and `select` use, so an audit before `fit --backbone` the same
backbone makes the fit start warm (and the other way round). Nothing here writes to the user's data: `write_clean`
writes a new table of the items to keep, which `fit` reads.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_write_bytes, check_writable
from ..api import prepare_splits
from ..data import Dataset, Splits, load_data
from ..data.frames import InMemoryData
from ..data.unlabeled import read_unlabeled
from ..embedding_cache import backbone_cache
from ..embeddings import embed_items
from ..errors import DataError, HeadstartError, SettingsError
from ..modalities import ensure_same_modality, get_modality
from ..options import BackboneOptions, DataOptions, RunOptions, backbone_options, refuse_unknown, sorted_into
from ..settings import check_range
from .duplicates import CONTENT_THRESHOLD, duplicate_pairs
from .findings import KINDS
from .fitted_judgement import fitted_judgement
from .label_errors import classes_too_small, confident_learning, probe_judgement
from .outliers import NEIGHBOURS, find_outliers, outlier_scores
from .similarity import unit_rows

log = logging.getLogger("headstart")

__all__ = ["AuditResult", "audit"]

SPLIT_ORDER = ("train", "val", "test")


@dataclass
class AuditedItems:
    """Every labeled item of the data in their own order (the train part, then val and test where the data
    define them), with the split `fit` would put each in."""

    modality: str
    items: list
    labels: np.ndarray
    classes: list[str]
    splits: np.ndarray  # "train" | "val" | "test" per item
    unsplit: str = ""  # why `fit` could not split the data (every item is then "train"), or ""

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class AuditResult:
    """The findings: one record per finding (see `records`), and what they were found with."""

    data: str
    modality: str
    backbone: str
    classes: list[str]
    items: int
    split_sizes: dict[str, int]
    near_threshold: float
    records: list[dict[str, Any]]
    overlapping_classes: list[dict[str, Any]]
    keep: np.ndarray = field(repr=False)  # per item: kept by write_clean
    audited: AuditedItems = field(repr=False)
    against: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]

    def counts(self) -> dict[str, int]:
        return {kind: len(self.of_kind(kind)) for kind in KINDS}

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("keep", "audited")}
        return {**fields, "counts": self.counts(), "kept": int(self.keep.sum())}

    def write_clean(self, path: str | Path) -> Path:
        """Write a table (CSV, TSV, JSONL or Parquet by the suffix) of the items to keep: a `text` or `path`
        column and a `label` column, in the data's order; `fit` reads it as it reads any table."""
        return write_table(Path(path), self.audited, np.flatnonzero(self.keep))

    def write_list(self, path: str | Path) -> Path:
        """Write the findings as a table (CSV by default, or JSONL/TSV/Parquet by the suffix), one row each."""
        import pandas as pd

        columns = ["kind", "rank", "index", "item", "split", "label", "suggested", "score", "other_index", "other_item",
                   "other_split", "other_label", "similarity", "exact", "same_content", "content_similarity"]
        frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in self.records], columns=columns)
        return write_frame(Path(path), frame)




def _with_positions(raw: Splits) -> tuple[Splits, list[tuple[str, Dataset]]]:
    """`raw` with each item replaced by (part, index in that part), so that the splits `fit` makes from it say
    where each item came from; and the named parts that define the items' order."""
    parts = [(name, part) for name, part in zip(SPLIT_ORDER, (raw.train, raw.val, raw.test)) if part is not None]
    tagged = {name: replace(part, items=[(name, i) for i in range(len(part))]) for name, part in parts}
    return Splits(tagged["train"], tagged.get("val"), tagged.get("test")), parts


def fit_split_items(data: Any, text_column: str | None, label_column: str | None, val_size: float | int,
                    test_size: float | int, seed: int) -> tuple[AuditedItems, str]:
    """The labeled items of `data` and the split each lands in when `fit` splits it with these sizes and seed
    (fit's own split function, run on the items' positions), and the data's name for messages."""
    if isinstance(data, Splits):
        raw = data
    elif isinstance(data, Dataset):
        raw = Splits(data, None, None)
    else:
        raw = load_data(data, text_column, label_column)
    if not raw.task.one_class_per_item:
        raise SettingsError(f"audit checks classification labels; these data hold {raw.task.name} labels")
    tagged, parts = _with_positions(raw)
    offsets, total = {}, 0
    for name, part in parts:
        offsets[name] = total
        total += len(part)
    where = np.empty(total, dtype=object)
    unsplit = ""
    try:
        splits = prepare_splits(tagged, None, None, val_size, test_size, None, seed, task=raw.task)
    except DataError as e:  # too few labels to split (a first round of `suggest`): still worth auditing
        where[:], unsplit = "train", str(e)
    else:
        for name, part in zip(SPLIT_ORDER, (splits.train, splits.val, splits.test)):
            for origin, i in part.items:
                where[offsets[origin] + i] = name
    items = [item for _, part in parts for item in part.items]
    labels = np.concatenate([part.labels for _, part in parts])
    source = str(data) if not isinstance(data, (Dataset, Splits)) and isinstance(data, (str, Path)) else raw.train.name
    return AuditedItems(raw.modality, items, labels, raw.classes, where, unsplit), source


def _embed(net: Any, items: list, cache: Any, precision: str, what: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Embeddings of `items`, a mask of the readable ones, and (index, reason) of the others."""
    embeddings, failures = embed_items(net, items, cache, precision, desc=f"embedding {what}")
    readable = np.ones(len(items), dtype=bool)
    readable[[i for i, _ in failures]] = False
    return embeddings, readable, failures


def _describe(modality: str, item: Any, i: int) -> str:
    return get_modality(modality).describe(item, i)


def _item_record(kind: str, a: AuditedItems, i: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "index": int(i), "item": _describe(a.modality, a.items[i], i), "split": str(a.splits[i]),
            "label": a.classes[a.labels[i]], **extra}


@dataclass(frozen=True)
class Judge:
    """What gives the out-of-fold probabilities that label errors are found by: without a `strategy` (the default)
    the logistic-regression probe on the cached embeddings (seconds); with one, that `fit` strategy fitted on the
    other folds with `settings` (one fit per fold: `fitted_judgement`)."""

    strategy: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, items: list, labels: np.ndarray, classes: list[str], embeddings: np.ndarray,
                      backbone: BackboneOptions, run: RunOptions) -> tuple[np.ndarray, str]:
        """Out-of-fold probabilities of the classes present in `labels` (indices into `classes`) for `items` (whose
        embeddings are `embeddings`), and a line saying how they were made."""
        if self.strategy is None:
            return probe_judgement(embeddings, labels, run.seed)
        return fitted_judgement(items, labels, classes, backbone, self.strategy, self.settings, run)


def _label_records(a: AuditedItems, readable: np.ndarray, embeddings: np.ndarray, judge: Judge,
                   net_options: BackboneOptions, run: RunOptions
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    rows = np.flatnonzero(readable)
    labels = a.labels[rows]
    reason = classes_too_small(labels, a.classes)
    if reason:
        log.warning("%s", reason)
        return [], [], [reason]
    probs, judged_by = judge.probabilities([a.items[i] for i in rows], labels, a.classes, embeddings[rows],
                                           net_options, run)
    found = confident_learning(labels, probs, a.classes, judged_by)
    kinds = np.where(found.below_chance, "label_error", "ambiguous_label")  # ranks renumbered within each kind
    records = [_item_record(str(kind), a, rows[i], rank=rank, suggested=a.classes[s], score=round(float(q), 4))
               for rank, (kind, i, s, q) in enumerate(zip(kinds, found.issues, found.issue_suggested,
                                                          found.issue_quality), 1)]
    agreement = float((found.probabilities.argmax(1) == labels).mean())
    note = (f"label errors: out-of-fold probabilities of {found.judged_by}, which agree with {agreement:.1%} of the "
            "given labels; confident learning (cleanlab); score = the probability of the given label; an issue whose "
            f"label is still rated at or above chance (1/{found.classes_present}) is listed as ambiguous and kept in "
            "the clean table")
    return records, found.overlapping, [note]


def _pair_records(a: AuditedItems, rows: np.ndarray, pairs: list, other: AuditedItems | None = None
                  ) -> list[dict[str, Any]]:
    """Records of duplicate pairs (indices into `rows`, the readable items): a leak when the two are in different
    splits, conflicting when their labels differ (within the data), a duplicate otherwise."""
    records = []
    for rank, p in enumerate(pairs, 1):
        i = int(rows[p.a])
        if other is not None:
            j = p.b
            kind = "against"
        else:
            j = int(rows[p.b])
            kind = ("leak" if a.splits[i] != a.splits[j] else
                    "conflicting" if a.labels[i] != a.labels[j] else "duplicate")
        target = other or a
        records.append(_item_record(kind, a, i, rank=rank, score=round(p.similarity, 4),
                                    other_index=int(j), other_item=_describe(target.modality, target.items[j], j),
                                    other_split=str(target.splits[j]), other_label=target.classes[target.labels[j]],
                                    similarity=round(p.similarity, 4), exact=p.exact, same_content=p.same_content,
                                    content_similarity=None if p.content_similarity is None else
                                    round(p.content_similarity, 4)))
    return records


def _against_items(against: Any, text_column: str | None, label_column: str | None, modality: str) -> AuditedItems:
    """Every item of the other data set (all its parts), labeled as it is labeled, or unlabeled ("?") when it
    holds no labels (a table without a label column, a folder of files)."""
    try:
        raw = against if isinstance(against, Splits) else load_data(against, text_column, label_column,
                                                                   modality=modality)
    except DataError as e:
        try:
            unlabeled = read_unlabeled(against, text_column)
        except DataError:
            raise DataError(f"--against {against}: {e}") from None
        ensure_same_modality(modality, unlabeled.modality, "the audit of these data", f"--against {against} is",
                             "compare against data of the same kind")
        return AuditedItems(unlabeled.modality, list(unlabeled.items), np.zeros(len(unlabeled), dtype=np.int64),
                            ["?"], np.array(["against"] * len(unlabeled), dtype=object))
    parts = [(name, p) for name, p in zip(SPLIT_ORDER, (raw.train, raw.val, raw.test)) if p is not None]
    return AuditedItems(raw.modality, [x for _, p in parts for x in p.items],
                        np.concatenate([p.labels for _, p in parts]), raw.classes,
                        np.array([f"against {name}" if len(parts) > 1 else "against" for name, p in parts
                                  for _ in range(len(p))], dtype=object))


def _check_out_files(outputs: list[tuple[Path | None, str]], inputs: list[Any]) -> None:
    """Refuse to write over the user's data: an output file (with the option that names it) that is one of the
    inputs."""
    given = {Path(x).expanduser().resolve() for x in inputs if isinstance(x, (str, Path)) and Path(x).exists()}
    for path, option in outputs:
        if path is not None and path.expanduser().resolve() in given:
            raise SettingsError(f"{option} would write {path}, which is data being audited: audit never changes the "
                                "data; give it another name")


def audit(
    data: str | Path | Dataset | Splits | InMemoryData,
    backbone: str | BackboneOptions,
    *,
    against: str | Path | Splits | None = None,
    near_threshold: float | None = None,
    out: str | Path | None = None,
    write_clean: str | Path | None = None,
    strategy: str | None = None,
    data_options: DataOptions | None = None,
    run_options: RunOptions | None = None,
    **options: Any,
) -> AuditResult:
    """Audit labeled `data` (anything `fit` takes) with the embeddings of `backbone` (a name, or `fit`'s backbone
    options: `image_size`, `max_length`, `weights` apply).

    Finds likely label errors (each with the class it is likely to be), exact and near duplicates (cosine
    similarity of the mean-centred embeddings at least `near_threshold`, by default the modality's
    `near_duplicate_threshold`: images 0.9, texts and audio 0.99; also by their content, see
    `duplicates.CONTENT_THRESHOLD`) within one split, across the splits `fit` makes with `val_size`, `test_size`
    and `seed` (leaks; none where the data are too few to split), and against a second data set `against`,
    duplicates whose labels differ, outliers and overlapping classes. The user's files are only read.
    `out`: write the findings as an HTML page there (thumbnails, texts, players) and a list beside it (.csv).
    `write_clean`: write a table of the items to keep (all but likely label errors, the later copy of each
    duplicate pair, items duplicating one of `against`, and unreadable items; outliers are kept, they may be rare
    but right), which `fit` reads.
    `strategy`: what judges the labels. None (default): audit's own logistic-regression probe on the cached
    embeddings (seconds). A `fit` strategy ("finetune", "lora", "probe", ...): that strategy fitted on the other
    folds, one `fit` per fold, with its settings as keywords (`epochs=3`); finetune costs minutes, and is more
    precise where the frozen features separate the classes poorly (SST-2 with minilm: docs/audit.md).
    The option objects are `fit`'s: `data_options` (`text_column`, `label_column`, and `val_size`, `test_size` for
    the splits leaks are judged by), `run_options` (`seed`, the splits' as in `fit`; `precision`, `cache`); as in
    `fit`, their fields may be given as keywords (`seed=1`, `image_size=64`).
    """
    loose = dict(options)
    net_options = sorted_into(backbone_options(backbone), BackboneOptions, loose)
    data_options = sorted_into(data_options, DataOptions, loose)
    run = sorted_into(run_options, RunOptions, loose)
    judge = _judge(strategy, loose)
    seed = run.seed
    clean_path, page_path, list_path = _check_audit_settings(data, against, near_threshold, out, write_clean)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    audited, source, (embeddings, readable, failures), other, other_embedded = _load_and_embed(
        data, net_options, data_options, run, against, seconds)
    if near_threshold is None:
        near_threshold = get_modality(audited.modality).near_duplicate_threshold
    rows = np.flatnonzero(readable)
    if len(rows) < 2:
        raise DataError(f"{source}: fewer than two readable items to audit")
    t = time.perf_counter()
    records, overlapping, notes = _label_records(audited, readable, embeddings, judge, net_options, run)
    seconds["label_errors"] = time.perf_counter() - t
    t = time.perf_counter()
    found, neighbour_sims, fingerprinted = _duplicate_records(audited, rows, embeddings, other, other_embedded,
                                                              near_threshold)
    records += found + _outlier_records(audited, rows, neighbour_sims)
    records += [_item_record("unreadable", audited, i, reason=reason) for i, reason in failures]
    seconds["duplicates_outliers"] = time.perf_counter() - t
    keep = items_to_keep(readable, records)
    _rank_within_kinds(records)
    notes.append(_duplicates_note(near_threshold, fingerprinted, get_modality(audited.modality), seed,
                                  data_options.val_size, data_options.test_size, audited.unsplit))
    notes += _alike_warning(found, len(rows), near_threshold)
    seconds["total"] = time.perf_counter() - started
    sizes = {name: int((audited.splits == name).sum()) for name in SPLIT_ORDER}
    result = AuditResult(source, audited.modality, net_options.name, audited.classes, len(audited), sizes, near_threshold,
                         records, overlapping, keep, audited, str(against) if against is not None else None,
                         {k: round(v, 2) for k, v in seconds.items()}, notes)
    log.info("audit: %s", ", ".join(f"{n} {KINDS[k]}" for k, n in result.counts().items() if n) or "nothing found")
    _write_outputs(result, clean_path, page_path, list_path)
    return result


def _judge(strategy: str | None, loose: dict[str, Any]) -> Judge:
    """The judge of labels `strategy` names, with the keywords left in `loose` as its settings; checked now (a
    strategy that does not exist, a setting it does not have), before any work."""
    from ..strategies import STRATEGIES, make_strategy

    if strategy is None:
        settings = sorted(k for k in loose if any(k in {f.name for f in dataclasses.fields(c)}
                                                  for c in STRATEGIES.values()))
        if settings:
            raise SettingsError(f"audit: {', '.join(settings)} set how a strategy fitted on the other folds judges "
                                "the labels; the default judge (a probe on the cached embeddings) has no settings: "
                                "pass the strategy too (--strategy finetune, strategy='finetune' in Python)")
        refuse_unknown("audit", loose)
        return Judge()
    make_strategy(strategy, dict(loose))
    return Judge(strategy, dict(loose))


def _load_and_embed(data: Any, net_options: BackboneOptions, data_options: DataOptions, run: RunOptions, against: Any,
                    seconds: dict[str, float]) -> tuple:
    """The audited items (with fit's splits) and the data's name, their `_embed` result, the `against` items
    (None without) and theirs; the seconds of loading and embedding go into `seconds`."""
    started = time.perf_counter()
    columns = (data_options.text_column, data_options.label_column)
    audited, source = fit_split_items(data, *columns, data_options.val_size, data_options.test_size, run.seed)
    net = net_options.resolve(audited.modality)
    ensure_same_modality(net.modality, audited.modality, f"backbone '{net_options.name}'", "the data are",
                         f"try --backbone {get_modality(audited.modality).suggested_backbone}", HeadstartError)
    precision = run.precision
    store = backbone_cache(net, precision, run.cache)
    other = _against_items(against, *columns, audited.modality) if against is not None else None
    seconds["load"] = time.perf_counter() - started
    t = time.perf_counter()
    embedded = _embed(net, audited.items, store, precision, source)
    other_embedded = _embed(net, other.items, store, precision, str(against)) if other is not None else None
    seconds["embed"] = time.perf_counter() - t
    return audited, source, embedded, other, other_embedded


def _check_audit_settings(data: Any, against: Any, near_threshold: float | None, out: str | Path | None,
                          write_clean: str | Path | None) -> tuple[Path | None, Path | None, Path | None]:
    """Refuse settings `audit` cannot run with and outputs it must not or cannot write (one-line errors; the
    option objects check their own fields); the paths of the clean table, the page and the list beside the page."""
    if near_threshold is not None:
        check_range("near_threshold", near_threshold, low=0, high=1, low_open=True)
    clean_path = Path(write_clean) if write_clean is not None else None
    page_path = Path(out) if out is not None else None
    list_path = page_path.with_suffix(".csv") if page_path is not None else None
    _check_out_files([(clean_path, "--write-clean"), (page_path, "--out"),
                      (list_path, f"--out {page_path} (its list beside it)")], [data, against])
    if clean_path is not None and page_path is not None and clean_path.expanduser().resolve() in {
            page_path.expanduser().resolve(), list_path.expanduser().resolve()}:
        raise SettingsError(f"--write-clean {clean_path} is where the findings go (--out {page_path} writes the page "
                            f"and {list_path.name} beside it): give the clean table another name")
    for path, option in ((clean_path, "--write-clean"), (page_path, "--out")):
        if path is not None:
            check_writable(path.expanduser().parent, f"{option} {path}")
    return clean_path, page_path, list_path


def _duplicate_records(audited: AuditedItems, rows: np.ndarray, embeddings: np.ndarray, other: AuditedItems | None,
                       other_embedded: tuple | None, near_threshold: float
                       ) -> tuple[list[dict[str, Any]], np.ndarray, bool]:
    """Records of duplicates, leaks and conflicting pairs within the readable items `rows`, and of items in the
    `other` data (its `_embed` result); each item's similarities to its nearest neighbours (for outliers); and
    whether content fingerprints took part (images, texts)."""
    modality = get_modality(audited.modality)
    digests = [modality.digest(audited.items[i]) for i in rows]
    center = embeddings[rows].mean(axis=0)
    unit = unit_rows(embeddings[rows], center)
    prints = modality.content_fingerprints([audited.items[i] for i in rows])
    pairs, _, neighbour_sims = duplicate_pairs(digests, unit, near_threshold, k=NEIGHBOURS, fingerprints=prints)
    records = _pair_records(audited, rows, pairs)
    if other is not None:
        other_embeddings, other_readable, _ = other_embedded
        other_rows = np.flatnonzero(other_readable)
        other_digests = [modality.digest(other.items[j]) for j in other_rows]
        other_prints = None if prints is None else modality.content_fingerprints([other.items[j] for j in other_rows])
        across, _, _ = duplicate_pairs(digests, unit, near_threshold, other_digests,
                                       unit_rows(other_embeddings[other_rows], center), fingerprints=prints,
                                       other_fingerprints=other_prints)
        for p in across:
            p.b = int(other_rows[p.b])
        records += _pair_records(audited, rows, across, other)
    return records, neighbour_sims, prints is not None


def _outlier_records(audited: AuditedItems, rows: np.ndarray, neighbour_sims: np.ndarray) -> list[dict[str, Any]]:
    """Records of the readable items (`rows`) far from all others, by their nearest neighbours' similarities."""
    scores = outlier_scores(neighbour_sims) if neighbour_sims.shape[1] else np.zeros(len(rows))
    return [_item_record("outlier", audited, rows[i], rank=rank, score=round(float(scores[i]), 4))
            for rank, i in enumerate(find_outliers(scores), 1)]


def _rank_within_kinds(records: list[dict[str, Any]]) -> None:
    """Sort the records by kind (KINDS' order), then rank; renumber the ranks within each kind (pairs were ranked
    together)."""
    order = {kind: n for n, kind in enumerate(KINDS)}
    records.sort(key=lambda r: (order[r["kind"]], r.get("rank", 0)))
    for kind in KINDS:
        for rank, r in enumerate((r for r in records if r["kind"] == kind), 1):
            r["rank"] = rank


# Above this share of the items in pairs that only the embeddings found, the audit warns that they may be distinct
# items alike in meaning: at the defaults the shared sets stay under 0.6% (benchmarks/near_duplicates.py).
ALIKE_WARNING_SHARE = 0.02


def _alike_warning(pair_records: list[dict[str, Any]], items: int, near_threshold: float) -> list[str]:
    """A warning (logged, and returned as a note) when many items are in pairs their embeddings alone found."""
    alike = {r["index"] for r in pair_records if not r["same_content"]}
    alike |= {r["other_index"] for r in pair_records if not r["same_content"] and r["kind"] != "against"}
    if len(alike) <= ALIKE_WARNING_SHARE * items:
        return []
    warning = (f"{len(alike)} of {items} items ({len(alike) / items:.0%}) are in near pairs that only their embeddings "
               f"found (cosine >= {near_threshold:g}, not the same content): items alike in meaning, not necessarily "
               "copies; look at a few on the page, and if they are distinct raise --near-threshold (the clean table "
               "drops the later of each pair)")
    log.warning("%s", warning)
    return [warning]


def _duplicates_note(near_threshold: float, fingerprinted: bool, modality: Any, seed: int, val_size: float | int,
                     test_size: float | int, unsplit: str) -> str:
    """What counted as a duplicate, and the splits leaks were judged by (or why there were none)."""
    splits = (f"no leaks across splits judged, since `fit` could not split these data ({unsplit})" if unsplit else
              f"splits as `fit` makes them (seed {seed}, val {val_size}, test {test_size})")
    return (f"duplicates: same content (file bytes or text), or cosine similarity of mean-centred embeddings "
            f">= {near_threshold:g}" + (f", or of {modality.content_fingerprint_note} >= "
                                        f"{CONTENT_THRESHOLD:g}" if fingerprinted else "") + f"; {splits}")


def _write_outputs(result: AuditResult, clean_path: Path | None, page_path: Path | None,
                   list_path: Path | None) -> None:
    """Write the clean table, and the page with the list beside it, where asked."""
    if clean_path is not None:
        result.write_clean(clean_path)
        log.info("audit: wrote the %d items to keep (of %d) to %s", int(result.keep.sum()), len(result.keep),
                 clean_path)
    if page_path is not None:
        from .page import write_page

        write_page(result, page_path.expanduser())
        result.write_list(list_path)
        log.info("audit: wrote %s and %s", page_path, list_path)


def items_to_keep(readable: np.ndarray, records: list[dict[str, Any]]) -> np.ndarray:
    """Per item, whether the clean table keeps it: readable, not a likely label error, not in the other data, and
    not a copy of an earlier item that is kept (so a chain of near duplicates keeps its first item, and the copy
    of a dropped label error is not dropped for it). A near (not exact) pair in one split whose labels differ keeps
    both: they may be two items (":)" and ":(" fold alike), and which label is right is for a person to say."""
    keep = readable.copy()
    earlier: dict[int, list[int]] = {}
    for r in records:
        if r["kind"] in ("label_error", "against"):
            keep[r["index"]] = False
        elif r["kind"] in ("leak", "duplicate") or (r["kind"] == "conflicting" and r["exact"]):
            first, later = sorted((r["index"], r["other_index"]))
            earlier.setdefault(later, []).append(first)
    for later in sorted(earlier):
        if keep[later] and any(keep[first] for first in earlier[later]):
            keep[later] = False
    return keep


def write_frame(path: Path, frame: Any) -> Path:
    """Write a DataFrame by the file's suffix (csv default), atomically."""
    suffix = path.suffix.lower()
    buffer = io.BytesIO()
    if suffix in (".csv", ".tsv", ""):
        frame.to_csv(buffer, index=False, sep="\t" if suffix == ".tsv" else ",")
    elif suffix == ".jsonl":
        frame.to_json(buffer, orient="records", lines=True, force_ascii=False)
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(buffer, index=False)
    else:
        raise SettingsError(f"{path}: write a .csv, .tsv, .jsonl or .parquet table")
    atomic_write_bytes(path.expanduser(), buffer.getvalue())
    return path


def item_column(modality: str, items: list) -> tuple[str, list[str]]:
    """The column a table names items of `modality` in, as `fit` looks for it: `path` (absolute paths) for items
    kept in files, `text` for texts."""
    if get_modality(modality).file_extensions:
        return "path", [str(Path(x).expanduser().resolve()) for x in items]
    return "text", list(items)


def write_table(path: Path, audited: AuditedItems, rows: np.ndarray) -> Path:
    """The items `rows` of `audited` as a table `fit` reads: `text` (texts) or `path` (absolute file paths), and
    `label`."""
    import pandas as pd

    items = [audited.items[i] for i in rows]
    if any(not isinstance(x, (str, Path)) for x in items):
        raise DataError("the items are arrays in memory (a built-in data set), not texts or files: a table cannot "
                        "name them; use the audit's records instead")
    column, values = item_column(audited.modality, items)
    frame = pd.DataFrame({column: values, "label": [audited.classes[audited.labels[i]] for i in rows]})
    return write_frame(path, frame)
