"""`suggest`: which unlabeled items to label next, chosen on one embedding pass.

- Without a model (cold start, few or no labels): TypiClust (Hacohen, Dekel and Weinshall, "Active Learning on a
  Budget", ICML 2022). The embeddings are split by k-means into as many clusters as there will be labeled items
  (labeled + budget; the best of up to 10 seeded runs when clusters are few); in each cluster that holds no
  labeled item yet, largest first, the most typical item is chosen: the one with the highest inverse mean distance
  to its nearest neighbours within the cluster (20, as in the paper). Typical items of distinct clusters label
  the dense regions first, which is what helps when labels are few. Where the labeled items' classes are known,
  the clusters are taken class-balanced: those whose typical item a probe on the labeled items places in the
  least-labeled classes first (`balanced_order`).
- With a trained model: BADGE (Ash et al., ICLR 2020): k-means++ seeding on the gradient embeddings of the model's
  last layer, uncertain *and* diverse items. It replaces the least margin within k-means clusters: after 7 labels
  per class chosen by TypiClust on CIFAR-10 (lite0), 3 seeds, the next three rounds scored 0.633 / 0.650 / 0.657
  against margin's 0.602 / 0.612 / 0.632 (RESULTS.md, "Issue 24, fourth round").

The result is a table to fill in (the item, an empty `label` column, and why it was chosen), which `fit` reads
together with the labeled data once the rows are joined: rows whose label is still empty are left out (with a
warning that counts them).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset, Splits, load_data
from ..data.unlabeled import UnlabeledData, read_unlabeled
from ..embedding_cache import backbone_cache
from ..embeddings import embed_items
from ..errors import DataError, HeadstartError, SettingsError
from ..modalities import ensure_same_modality, get_modality
from ..model import TrainedModel, model_folder
from ..options import BackboneOptions, DataOptions, RunOptions, backbone_options, refuse_unknown, sorted_into
from ..settings import check_range
from .similarity import scan, unit_rows

log = logging.getLogger("headstart")

__all__ = ["Suggestion", "suggest"]

TYPICALITY_NEIGHBOURS = 20  # TypiClust's k
# Items beyond which k-means runs on mini-batches: seconds, not minutes. On all 49,000 CIFAR-10 images (lite0, 3
# seeds, labels random choice needs for TypiClust's accuracy at 1-10 labels per class) it did as well as the
# slower choices tried (mini-batches 1.46-1.91x in 340 s of TypiClust rounds; full k-means fitted on 20,000 of
# them, all assigned, 1.25-1.80x in 3,263 s; TypiClust on 20,000 drawn at random 1.17-2.03x in 1,860 s; RESULTS.md,
# "Issue 24, sixth round").
MINIBATCH_ABOVE = 20_000


@dataclass
class Suggestion:
    """The items to label next, best first, each with why it was chosen."""

    source: str
    modality: str
    method: str  # "typiclust" or "badge"
    items: list
    indices: list[int]  # into the unlabeled items
    reasons: list[str]
    candidates: int
    clusters: int
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["items"] = [get_modality(self.modality).describe(x, i) for x, i in zip(self.items, self.indices)]
        return record

    def write(self, path: str | Path) -> Path:
        """The table to fill in: `text` (texts) or `path` (absolute file paths), an empty `label`, the `reason`."""
        import pandas as pd

        from .data_audit import item_column, write_frame

        if any(not isinstance(x, (str, Path)) for x in self.items):
            raise DataError("the unlabeled items are arrays in memory (a built-in data set), not texts or files: a "
                            "table cannot name them")
        column, values = item_column(self.modality, self.items)
        return write_frame(Path(path), pd.DataFrame({column: values, "label": [""] * len(values),
                                                      "reason": self.reasons}))


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


# k-means++ seeding varies most from run to run when clusters are few, and then each chosen item weighs most: the
# best of several runs (lowest inertia) is kept, as many as fit in about KMEANS_RUNS_WORK clusters seeded in all.
# Measured from zero labels, 5 seeds (3 for Banking77), probe accuracy at one label per class, one run against 10:
# CIFAR-10 lite0 0.243 +- 0.039 -> 0.279 +- 0.009, Banking77 minilm 0.539 -> 0.556, FSDD speech_embedding 0.846 ->
# 0.879, TREC-6 minilm 0.322 -> 0.300 (6 labels).
KMEANS_RUNS_WORK = 1000
KMEANS_MAX_RUNS = 10


def kmeans_runs(clusters: int) -> int:
    """How many seeded k-means runs to keep the best of: 10 for up to 100 clusters, one from 1,000 on."""
    return int(np.clip(KMEANS_RUNS_WORK // max(clusters, 1), 1, KMEANS_MAX_RUNS))


def kmeans(x: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Cluster ids of the rows (k-means++, seeded, the best of `kmeans_runs`; mini-batches for large data), on one
    thread: where other processes hold the cores, scikit-learn's OpenMP threads wait for each other (measured on
    the shared 2-core Xeon at load 4.5: 770 clusters of Banking77's 8,003 x 384 took 38 s on the default threads,
    4.2 s on one)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    if len(x) > MINIBATCH_ABOVE:
        model = MiniBatchKMeans(clusters, random_state=seed, n_init=3, batch_size=4096)
    else:
        model = KMeans(clusters, random_state=seed, n_init=kmeans_runs(clusters))
    with threadpool_limits(1):
        return model.fit_predict(x)


def typicality(unit: np.ndarray, k: int = TYPICALITY_NEIGHBOURS) -> np.ndarray:
    """TypiClust's typicality of each row among the rows given: 1 / mean Euclidean distance to its k nearest
    neighbours (unit rows: distance sqrt(2 - 2 cos)). A lone row is as typical as can be."""
    if len(unit) < 2:
        return np.full(len(unit), np.inf)
    found = scan(unit, None, None, k)
    distances = np.sqrt(np.clip(2.0 - 2.0 * found.neighbour_similarity, 0.0, None))
    return 1.0 / (distances.mean(axis=1) + 1e-12)


def typiclust(unit: np.ndarray, candidate: np.ndarray, budget: int, seed: int,
              labels: np.ndarray | None = None) -> tuple[list[int], list[str], int]:
    """TypiClust's choice of `budget` rows among the `candidate` rows (the others are labeled): rows, reasons, and
    the number of clusters. `labels`, the classes of the labeled rows (in row order) where they are known, make
    the choice class-balanced (`balanced_order`)."""
    labeled = int((~candidate).sum())
    clusters = min(labeled + budget, len(unit))
    ids = kmeans(unit, clusters, seed)
    sizes = np.bincount(ids, minlength=clusters)
    covered = set(ids[~candidate].tolist())
    order = [c for c in np.argsort(-sizes, kind="stable") if c not in covered]  # they hold candidates only
    balance = labels is not None and len(set(labels)) > 1
    considered = order if balance else order[:budget]  # balancing chooses among every uncovered cluster
    typical = []
    for c in considered:
        members = np.flatnonzero(ids == c)
        typical.append(int(members[np.argmax(typicality(unit[members]))]))
    reasons = [f"the most typical item of an unlabeled cluster of {_items(sizes[c])} (TypiClust)" for c in considered]
    if not balance:
        return typical, reasons, clusters
    picks, likely = balanced_order(unit[~candidate], np.asarray(labels), unit[typical], budget)
    return ([typical[i] for i in picks],
            [f"{reasons[i]}; likely {why}" for i, why in zip(picks, likely)], clusters)


def balanced_order(labeled: np.ndarray, labels: np.ndarray, options: np.ndarray, budget: int
                   ) -> tuple[list[int], list[str]]:
    """`budget` of the `options` (TypiClust's typical items, largest cluster first), the class each is likely to be
    (a logistic-regression probe on the `labeled` rows) taken least labeled first, so that a round does not
    spend its labels on the classes that already have most: which options, and for each the class it was taken for
    with the labels that class had then ("cat, which had 2 labels").

    Class-balanced selection in the spirit of Bengar et al., "Class-Balanced Active Learning for Image
    Classification" (WACV 2022). TypiClust's clusters follow the embedding's dense regions, not the classes. On
    eight random pools of 5,000 CIFAR-10 images (lite0) balancing raised accuracy by 0.005-0.013 at 4-9 labels per
    class (saving against random choice 1.27-1.48x -> 1.40-1.56x), -0.003 at 3, the same at 1-2; on Banking77
    (minilm) it moved accuracy by -0.007 to +0.002 (RESULTS.md, "Issue 24, seventh round")."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), warnings.catch_warnings():  # a label or two per class is what it is made for
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(labeled, labels)
        likely = probe.predict(options)
    counts = {c: int((labels == c).sum()) for c in probe.classes_}
    left, picks, why = list(range(len(options))), [], []
    while len(picks) < budget and left:
        i = min(left, key=lambda j: counts[likely[j]])  # ties: the larger cluster (`left` keeps TypiClust's order)
        left.remove(i)
        picks.append(i)
        why.append(f"{likely[i]}, which had {counts[likely[i]]} label{'' if counts[likely[i]] == 1 else 's'}")
        counts[likely[i]] += 1
    return picks, why


def badge(features: np.ndarray, probabilities: np.ndarray, candidate: np.ndarray, budget: int, classes: list[str],
          seed: int) -> tuple[list[int], list[str], int]:
    """BADGE's choice of `budget` rows among the `candidate` rows (Ash, Zhang, Krishnamurthy, Langford and Agarwal,
    "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds", ICLR 2020): k-means++ seeding on each
    row's gradient embedding, the gradient of the loss on the last layer's weights had the predicted class been the
    label, (p - onehot(argmax p)) x h for class probabilities p and last-layer inputs h (`features`). Its length
    grows with uncertainty and with |h|, and D^2 sampling spreads the choice: uncertain *and* diverse. The first row
    is the longest gradient, as in the authors' code.

    Hand-written because the gradient embeddings are outer products (8,003 Banking77 items x 77 classes x 384
    features: 0.95 GB of float32); the squared distance |a_i h_i - a_j h_j|^2 = |a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2
    - 2 (a_i . a_j)(h_i . h_j) needs only the factors, so seeding runs in items x (classes + features) memory."""
    rows = np.flatnonzero(candidate)
    h = np.asarray(features[rows], dtype=np.float32)  # items x features: the large factor stays float32
    p = np.asarray(probabilities[rows], dtype=np.float64)
    a = p.copy()
    a[np.arange(len(rows)), p.argmax(axis=1)] -= 1.0
    lengths = (a * a).sum(axis=1) * (h * h).sum(axis=1, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picked = [int(np.argmax(lengths))]
    nearest = np.full(len(rows), np.inf)
    while len(picked) < budget:
        c = picked[-1]
        distance = lengths + lengths[c] - 2.0 * (a @ a[c]) * (h @ h[c])
        nearest = np.minimum(nearest, np.clip(distance, 0.0, None))
        nearest[picked] = 0.0
        total = nearest.sum()
        if total > 0:
            picked.append(int(rng.choice(len(rows), p=nearest / total)))
        else:  # every candidate left is a copy of one chosen: any of them
            picked.append(int(rng.choice(np.setdiff1d(np.arange(len(rows)), picked))))
    reasons = []
    for i in picked:  # D^2 sampling also takes a sure item now and then, to stand for the many sure ones
        first, second = np.argsort(-p[i])[:2]
        # relative to this pool: where the model is sure of nearly everything, the least sure may still be at 0.94
        why = "less sure than most and" if lengths[i] >= lengths.mean() else "the model is fairly sure, but it is"
        reasons.append(f"{why} unlike the others chosen (BADGE): {classes[first]} {p[i, first]:.2f}, "
                       f"{classes[second]} {p[i, second]:.2f}")
    return [int(rows[i]) for i in picked], reasons, budget


def _labeled_items(labeled: Any, modality: str, label_column: str | None = None) -> tuple[list, list[str] | None]:
    """The labeled items (a table's label column as given, or found by name), and their class names where each has
    one class (None otherwise: multi-label, regression), which TypiClust balances its choice by."""
    if labeled is None:
        return [], None
    if isinstance(labeled, Dataset):
        parts = [labeled]
    else:
        raw = labeled if isinstance(labeled, Splits) else load_data(labeled, None, label_column, modality=modality)
        parts = [p for p in (raw.train, raw.val, raw.test) if p is not None]
    items = [x for p in parts for x in p.items]
    if not all(p.task.one_class_per_item for p in parts):
        return items, None
    return items, [p.classes[int(y)] for p in parts for y in p.labels]


def suggest(
    unlabeled: str | Path | UnlabeledData,
    budget: int,
    *,
    model: str | Path | TrainedModel | None = None,
    backbone: str | BackboneOptions | None = None,
    labeled: str | Path | Dataset | Splits | None = None,
    out: str | Path | None = None,
    data_options: DataOptions | None = None,
    run_options: RunOptions | None = None,
    **options: Any,
) -> Suggestion:
    """Choose `budget` items of `unlabeled` (a folder of images or audio, a table's text column, a .txt file) to
    label next: TypiClust on the embeddings of `backbone` (cold start), or with `model` (a trained model or its
    folder) uncertain and diverse items by BADGE. `labeled` (data as `fit` takes them): items
    already labeled, never suggested again; TypiClust skips the clusters they cover and, with one class per item,
    takes first the clusters likely to be of the classes with the fewest labels. `out`: write the table to
    fill in (`.csv`, `.tsv`, `.jsonl` or `.parquet`). The option objects are `fit`'s: `backbone` may be its
    backbone options (`image_size`, `max_length`, `weights`), `data_options` (`text_column` of the unlabeled
    table, `label_column` of the labeled one), `run_options` (`seed`, `precision`, `cache`); as in `fit`, their fields may
    be given as keywords (`seed=1`)."""
    loose = dict(options)
    net_options = sorted_into(backbone_options(backbone) if backbone is not None else None, BackboneOptions, loose)
    data_options = sorted_into(data_options, DataOptions, loose)
    text_column = data_options.text_column
    run = sorted_into(run_options, RunOptions, loose)
    refuse_unknown("suggest", loose)
    seed = run.seed
    out_path = _check_suggest_settings(unlabeled, budget, model, backbone, out)
    started = time.perf_counter()
    data = unlabeled if isinstance(unlabeled, UnlabeledData) else read_unlabeled(unlabeled, text_column)
    trained, net, precision = _suggest_network(data, model, net_options if backbone is not None else None,
                                               run.precision)
    known, known_classes = _labeled_items(labeled, data.modality, data_options.label_column)
    pool = _embed_pool(data, net, known, precision, run.cache, budget)
    t = time.perf_counter()
    if trained is None:
        unit = unit_rows(pool.embeddings, pool.embeddings.mean(axis=0))
        labels = None if known_classes is None else pool.of_labeled(known_classes)
        chosen, reasons, clusters = typiclust(unit, pool.candidate, budget, seed, labels)
        method = "typiclust"
    else:
        head = trained.classifier.head
        chosen, reasons, clusters = badge(head.last_layer_inputs(pool.embeddings), head.probabilities(pool.embeddings),
                                          pool.candidate, budget, trained.classes, seed)
        method = "badge"
    indices = [pool.fresh[int(pool.rows[r])] for r in chosen]
    result = Suggestion(data.source, data.modality, method, [data.items[i] for i in indices], indices, reasons,
                        int(pool.candidate.sum()), clusters,
                        {"embed": round(pool.seconds, 2), "choose": round(time.perf_counter() - t, 2),
                         "total": round(time.perf_counter() - started, 2)})
    if out_path is not None:
        result.write(out_path)
        log.info("suggest: wrote %d items to label to %s (fill in the label column)", len(indices), out_path)
    return result


def _check_suggest_settings(unlabeled: Any, budget: int, model: Any, backbone: Any, out: str | Path | None
                            ) -> Path | None:
    """Refuse settings `suggest` cannot run with (one-line errors; the option objects check their own fields); the
    output path, if any."""
    check_range("budget", budget, low=1, integer=True)
    if (model is None) == (backbone is None):
        raise SettingsError("give either a backbone (--backbone NAME, cold start) or a trained model (--model RUN), "
                            "not both" if model is not None else "give a backbone (--backbone NAME) for a cold start, "
                            "or a trained model (--model RUN)")
    out_path = Path(out) if out is not None else None
    if out_path is not None and isinstance(unlabeled, (str, Path)) and Path(unlabeled).exists() and \
            out_path.expanduser().resolve() == Path(unlabeled).expanduser().resolve():
        raise SettingsError(f"--out {out_path} is the unlabeled data: write the table to label to a new file")
    return out_path


def _suggest_network(data: UnlabeledData, model: Any, net_options: BackboneOptions | None, precision: str
                     ) -> tuple[TrainedModel | None, Any, str]:
    """The trained model (None for a cold start with the backbone `net_options` name), the network whose
    embeddings choose, and its precision; refuses a model that is not a classifier and a network of another
    modality than the data."""
    trained = None
    if model is not None:
        trained = model if isinstance(model, TrainedModel) else TrainedModel.load(model_folder(model))
        if not trained.task.one_class_per_item:
            raise SettingsError(f"--model: BADGE needs a classifier, this model is {trained.task_name}")
        net, precision = trained.backbone, trained.precision
        what = "the model"
    else:
        net = net_options.resolve(data.modality)
        what = f"backbone '{net_options.name}'"
    ensure_same_modality(net.modality, data.modality, what, f"the unlabeled data ({data.source}) are",
                         f"give unlabeled {net.modality} data", HeadstartError)
    return trained, net, precision


@dataclass
class EmbeddedPool:
    """The readable items `suggest` chooses among: their embeddings (fresh unlabeled items first, then the labeled
    ones), which are candidates (not labeled already), their positions in the pool (`rows`), the unlabeled data's
    index of each fresh item, and the seconds the embedding took."""

    embeddings: np.ndarray
    candidate: np.ndarray
    rows: np.ndarray
    fresh: list[int]
    seconds: float

    def of_labeled(self, values: list) -> np.ndarray:
        """`values` given per labeled item (in the order `_embed_pool` was given them), for the labeled rows of
        the pool in row order: an unreadable item has no row."""
        return np.array([values[int(r) - len(self.fresh)] for r in self.rows[~self.candidate]])


def _embed_pool(data: UnlabeledData, net: Any, known: list, precision: str, cache: bool, budget: int
                ) -> EmbeddedPool:
    """Embed the unlabeled items not among the `known` (labeled) ones, then the known ones; refuses a budget over
    the readable candidates."""
    digest = get_modality(data.modality).digest
    known_digests = {digest(x) for x in known}
    fresh = [i for i, x in enumerate(data.items) if digest(x) not in known_digests]
    _check_budget(budget, len(fresh), "")  # before the embedding pass: it can only make fewer readable
    items = [data.items[i] for i in fresh] + known
    store = backbone_cache(net, precision, cache)
    t = time.perf_counter()
    embeddings, failures = embed_items(net, items, store, precision, desc=f"embedding {data.name}")
    seconds = time.perf_counter() - t
    readable = np.ones(len(items), dtype=bool)
    readable[[i for i, _ in failures]] = False
    if failures:
        log.warning("%s", get_modality(data.modality).failure_summary(items, failures))
    rows = np.flatnonzero(readable)
    candidate = (np.arange(len(items)) < len(fresh))[rows]
    _check_budget(budget, int(candidate.sum()), "readable ")
    return EmbeddedPool(embeddings[rows], candidate, rows, fresh, seconds)


def _check_budget(budget: int, candidates: int, kind: str) -> None:
    if budget > candidates:
        raise SettingsError(f"--budget {budget} is more than the {candidates} {kind}unlabeled items that are not "
                            f"labeled already: ask for at most {candidates}, or add unlabeled items")
