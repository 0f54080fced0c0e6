"""`select`: rank candidate backbones for a labeled data set without fine-tuning any.

Each candidate embeds the same class-balanced subsample of the training data (through the embedding cache that
`fit` uses, so the chosen backbone's `fit` starts warm), and is scored on those embeddings by LogME (You et al.
2021: the evidence that a linear model on the features explains the labels; higher is better) and by
leave-one-out kNN accuracy (a rough accuracy estimate, in percent a user can read). Candidates are ranked by
LogME, which predicts transfer accuracy better than kNN in the LogME paper and in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from ._util import default_device
from .data import Dataset, Splits, load_data
from .data.sources import per_class_subset
from .embedding_cache import backbone_cache
from .embeddings import embed_dataset
from .errors import DataError, HeadstartError, SettingsError
from .evaluation.knn import knn_accuracy
from .evaluation.logme import logme
from .extraction_engines import cache_precision, choose_engine, using_engine
from .modalities import ensure_same_modality, get_modality
from .options import BackboneOptions, DataOptions, RunOptions, refuse_unknown, sorted_into
from .settings import check_range

log = logging.getLogger("headstart")

__all__ = ["CandidateScore", "Selection", "select"]


@dataclass
class CandidateScore:
    """One backbone's scores on the subsample, and what computing them cost."""

    backbone: str
    logme: float
    knn_accuracy: float
    embedding_dim: int
    items: int  # readable items of the subsample it was scored on
    embed_seconds: float  # building the backbone and embedding (cached items are looked up, not computed)
    score_seconds: float  # LogME + kNN
    cache_hits: int
    cache_misses: int

    @property
    def seconds(self) -> float:
        return self.embed_seconds + self.score_seconds

    @property
    def ms_per_item(self) -> float | None:
        """Embedding cost of the items computed here (None when all came from the cache)."""
        return 1000 * self.embed_seconds / self.cache_misses if self.cache_misses else None


@dataclass
class Selection:
    """Candidates ranked best first (by LogME), with what they were scored on."""

    data: str
    modality: str
    classes: int
    per_class: int
    items: int
    candidates: list[CandidateScore]
    seconds: float

    @property
    def best(self) -> CandidateScore:
        return self.candidates[0]

    def to_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "candidates"}
        ranked = [{"rank": i + 1, **dataclasses.asdict(c), "seconds": round(c.seconds, 3),
                   "ms_per_item": c.ms_per_item} for i, c in enumerate(self.candidates)]
        return {**fields, "ranking": ranked, "best": self.best.backbone}


def _training_items(data: Any, text_column: str | None, label_column: str | None) -> Dataset:
    """The training part of `data`: what `fit` would train on (its own test split is not looked at when the
    data define one)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Splits):
        return data.train
    return load_data(data, text_column, label_column).train


def _score(backbone: BackboneOptions, sample: Dataset, precision: str, cache: bool, strict: bool) -> CandidateScore:
    started = time.perf_counter()
    name = backbone.name
    net = backbone.resolve(sample.modality)
    ensure_same_modality(net.modality, sample.modality, f"backbone '{name}'", "the data are",
                         f"try --backbones {get_modality(sample.modality).suggested_backbone}", HeadstartError)
    engine = choose_engine(net, "auto", precision, sample.items, default_device())  # as fit chooses: one cache
    store = backbone_cache(net, cache_precision(engine.engine, precision), cache)
    with using_engine(engine):
        readable, embeddings = embed_dataset(net, sample, store, precision, strict)
    embedded = time.perf_counter()
    del net
    gc.collect()
    if len(np.unique(readable.labels)) < 2:
        raise DataError(f"fewer than two classes have readable items in the subsample of {sample.name}")
    fit_score, knn_score = _scores_once(embeddings, readable.labels)
    return CandidateScore(name, fit_score, knn_score, embeddings.shape[1], len(readable), embedded - started,
                          time.perf_counter() - embedded, store.hits if store else 0,
                          store.misses if store else len(sample))


@distributed.on_main
def _scores_once(embeddings: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """LogME and kNN accuracy of the embeddings. Under torchrun every rank holds all the embeddings (each
    embedded its share of them), so rank 0 alone scores them and tells the others, rather than each rank
    repeating the same computation."""
    return float(logme(embeddings, labels)), float(knn_accuracy(embeddings, labels))


def select(
    data: str | Path | Dataset | Splits,
    backbones: list[str],
    *,
    per_class: int = 50,
    backbone_options: BackboneOptions | None = None,
    data_options: DataOptions | None = None,
    run_options: RunOptions | None = None,
    **options: Any,
) -> Selection:
    """Rank `backbones` (names or folders, as `fit --backbone` takes them) for `data` without training any.

    Scores each on the same class-balanced subsample of the training data (at most `per_class` items per class,
    drawn with the run options' `seed`): LogME (the ranking) and leave-one-out kNN accuracy (an estimate).
    Embeddings go through the cache `fit` uses at the same `precision`, so `fit` with the chosen backbone reuses
    them. The option objects are `fit`'s: `backbone_options` (its `image_size`, `max_length`, `weights`,
    `pretrained` apply to every candidate), `data_options` (`text_column`, `label_column`, `strict`),
    `run_options` (`seed`, `precision`, `cache`); as in `fit`, their fields may be given as keywords (`seed=1`).
    """
    names = list(dict.fromkeys(b.strip() for b in backbones if b and b.strip()))
    if not names:
        raise SettingsError("backbones (--backbones) must name at least one backbone, e.g. "
                            "--backbones efficientnet_lite0,efficientnet_lite1")
    check_range("per_class", per_class, low=2, integer=True)
    loose = dict(options)
    shared = sorted_into(backbone_options, BackboneOptions, loose)
    data_options = sorted_into(data_options, DataOptions, loose)
    run = sorted_into(run_options, RunOptions, loose)
    refuse_unknown("select", loose)
    text_column, label_column, strict = data_options.text_column, data_options.label_column, data_options.strict
    seed, precision, cache = run.seed, run.precision, run.cache
    started = time.perf_counter()
    train = _training_items(data, text_column, label_column)
    sample = per_class_subset(train, per_class, seed, warn=False)
    log.info("select: %d candidates on %d items (%d classes, at most %d each) of %s", len(names), len(sample),
             len(train.classes), per_class, train.name)
    scores = []
    for name in names:
        torch.manual_seed(seed)  # random weights (a control) are the seed's, as in `fit`
        scores.append(_score(dataclasses.replace(shared, name=name), sample, precision, cache, strict))
        log.info("select: %s LogME %.4f, kNN accuracy %.1f%% (%.1fs)", name, scores[-1].logme,
                 100 * scores[-1].knn_accuracy, scores[-1].seconds)
    scores.sort(key=lambda s: -s.logme)
    source = str(data) if not isinstance(data, (Dataset, Splits)) else train.name
    return Selection(source, train.modality, len(train.classes), per_class, len(sample), scores,
                     time.perf_counter() - started)
