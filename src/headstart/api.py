"""The Python API: fit, evaluate, explain, report. The CLI is a thin layer over these functions (`headstart.load`
is `model.load`: loading imports no training code)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import distributed
from ._util import default_device, resolve_precision, sha256_bytes
from .artifact import METRICS, ItemDigests
from .backbones.base import Backbone
from .data import Dataset, Splits, load_data, make_splits, read_test_data
from .data.frames import InMemoryData
from .embedding_cache import EmbeddingCache, backbone_cache
from .embeddings import embed_dataset
from .errors import DataError, HeadstartError, SettingsError
from .extraction_engines import EngineChoice, cache_precision, choose_engine, using_engine
from .heads import Classifier
from .manifests import DataRecord, HeadConfig, ModelManifest, StrategyRecord
from .modalities import ensure_same_modality, get_modality
from .model import IN_MEMORY_TEST, TrainedModel, batch_precision, evaluate_items
from .options import BackboneOptions, DataOptions, RunOptions, TaskOptions, backbone_options, sorted_into, task_options
from .run_folder import check_run_folder, discard_failed_run_folder, link_metrics, record_run
from .strategies import Strategy, TrainingRun, make_strategy
from .strategies.base import STRATEGIES, check_task
from .tasks import Task

log = logging.getLogger("headstart")

__all__ = ["evaluate", "explain", "fit", "report"]


def evaluate(model: TrainedModel | str | Path, data: Dataset | str | Path | InMemoryData, **options: Any
             ) -> dict[str, Any]:
    """Metrics of a model (or saved model folder) on labeled data it was not fitted on (a path, a Dataset, a
    DataFrame or an `(items, labels)` pair, as `fit` takes them): on the data it was fitted on, its recorded test
    split (see `TrainedModel.evaluation_data`). Options: text_column, label_column, strict, precision (default: the
    precision the model's metrics were measured at, fp32)."""
    model = model if isinstance(model, TrainedModel) else TrainedModel.load(model)
    return model.evaluate(data, **options)


def explain(model: TrainedModel | str | Path, items: list, out: str | Path | None = None,
            method: str | None = None) -> list[dict[str, Any]]:
    """Explain each item's prediction: occlusion (or `method="gradcam"`) for images, Integrated Gradients over
    tokens for texts (`method`: one of the modality's registered explainers, its default when None). With `out`,
    each explanation is written there (a PNG overlay, an HTML snippet). Returns one JSON-ready record per item."""
    from .explain import explainer_for, explanation_folder

    model = model if isinstance(model, TrainedModel) else TrainedModel.load(model)
    explainer = explainer_for(model, method)
    folder = explanation_folder(out) if out is not None else None
    records = []
    for i, e in enumerate(explainer.explain(items)):
        if folder is not None:
            name = f"{i:03d}-{explainer.file_stem(e.item)[:40]}{explainer.file_suffix}"
            e.file = explainer.save(e, folder / name)
        record: dict[str, Any] = {"input": str(e.item), "label": e.label, "score": round(e.score, 4),
                                  "method": explainer.method}
        if e.units:
            record["top_tokens"] = [[t, round(v, 4)] for t, v in explainer.describe(e)]
        if e.file is not None:
            record["file"] = str(e.file)
        records.append(record)
    return records


def report(run: str | Path, data: str | Path | None = None, out: str | Path | None = None,
           precision: str | None = None) -> Path:
    """Write RUN/report.html (or `out`): one self-contained page with what was trained on what, metrics with
    bootstrap intervals, per-class results, the confusion matrix, reliability before and after calibration, learning
    curves and the most confident mistakes with their explanations (for a multi-label model: per-label results,
    thresholds and the label co-occurrence; for a regression: per-target results, predicted against true, the
    prediction intervals). `data`: evaluate on other labeled data (as
    `evaluate` does); `precision`: evaluate in another than the model's evaluation precision (fp32)."""
    from .report import build_report

    return build_report(run, data, out, precision=precision)


def prepare_splits(data: Any, text_column: str | None, label_column: str | None, val_size: float | int,
                   test_size: float | int, labels_per_class: int | None, seed: int,
                   test: str | Path | Dataset | None = None, task: Task | None = None) -> Splits:
    """The train/validation/test splits `fit` trains and tests on, from any data it accepts, labels read for
    `task`; with `test`, the test split is that held-out data instead of a part of `data`."""
    if isinstance(data, Splits):
        raw = data
    elif isinstance(data, Dataset):
        raw = Splits(data, None, None)
    else:
        raw = load_data(data, text_column, label_column, task=task)
    if task is not None and raw.task.name != task.name:
        raise SettingsError(f"the data hold {raw.task.name} labels but --task {task.name} was asked: build the "
                            f"Dataset with task=make_task('{task.name}', ...) or pass the data as a table")
    if test is not None:
        held_out = read_test_data(test, raw.classes, raw.modality, text_column, label_column, raw.task)
        if raw.test is not None:
            log.warning("the data define their own test split (%d items, %s); the test data given apart replace it",
                        len(raw.test), raw.test.origin or raw.test.name)
        raw = Splits(raw.train, raw.val, held_out)
    return make_splits(raw, val_size, test_size, labels_per_class, seed)


MIN_TEST_ITEMS = 100


def _log_split_plan(splits: Splits) -> None:
    """Say how big each split is and where it came from; warn when the test split is too small to trust."""
    log.info("split plan:\n  %s", "\n  ".join(splits.plan()))
    n = len(splits.test)
    if n < MIN_TEST_ITEMS:
        def half_width(p: float) -> float:  # of the normal-approximation 95% interval of an accuracy p, in points
            return 100 * 1.96 * math.sqrt(p * (1 - p) / n)

        log.warning("the test split has only %d items: a 95%% interval of a rate measured on it (accuracy, recall) "
                    "is about ±%.0f points wide at 90%% (±%.0f at 50%%), too wide to tell close models apart. Hold "
                    "out more (at least %d): a test/ folder beside train/, --test DATA (test= in Python), or a "
                    "larger --test-size when the test split is cut from the training data", n, half_width(0.9),
                    half_width(0.5),
                    MIN_TEST_ITEMS)


def _data_fingerprint(splits: Splits) -> str:
    """A content hash of the training and validation items and labels: what --resume must find unchanged."""
    modality = get_modality(splits.modality)
    digests = [modality.digest(item) for part in (splits.train, splits.val) for item in part.items]
    labels = b"".join(part.labels.tobytes() for part in (splits.train, splits.val))
    return sha256_bytes(*digests, labels)[:32]


def _run_config(options: dict[str, Any], plan: Strategy, splits: Splits) -> dict[str, Any]:
    """What `--resume` must find unchanged: the options, the strategy's settings (--epochs may grow), the data."""
    return {**options, "strategy": plan.name, "settings": {k: v for k, v in plan.settings().items() if k != "epochs"},
            "classes": splits.classes, "data": _data_fingerprint(splits)}


def _warn_if_test_overlaps(digests: ItemDigests) -> None:
    """A test item whose content is also a training or validation item scores what the model has seen: say how
    many (duplicates in the data, or --test data drawn from the training data)."""
    shared = digests.test_items_fitted()
    if shared:
        log.warning("%d of the test split's %d distinct items are also in the training or validation data (same "
                    "content): the test metrics count them; remove the duplicates for a clean held-out figure",
                    shared, len(digests.test))


def _test(classifier: Classifier, test: Dataset, cache: EmbeddingCache | None, precision: str, strict: bool,
          where: str) -> tuple[Dataset, dict[str, Any]]:
    """The readable part of the test split and the classifier's metrics on it at the evaluation `precision`,
    computed as `evaluate` and `report` compute them (the same folded inference copy, the same batches)."""
    inference = classifier.backbone.inference_copy(default_device(), fold=True)
    result = evaluate_items(classifier, test, precision, strict, inference_model=inference, cache=cache,
                            where=where, unreadable_hint=": add readable files or give a larger --test-size")
    return result.data, result.metrics


def _tune(classifier: Classifier, run: TrainingRun, frozen: bool, calibrate: bool) -> dict[str, Any] | None:
    """What the task tunes on the validation split after training (embeddings from the cache when the backbone
    stayed frozen): temperature scaling (with `calibrate`, kept only when cross-validation on that split shows it
    helps beyond noise), multi-label thresholds, regression intervals."""
    if frozen and run.val_embeddings is not None:  # the backbone did not change since the strategy embedded them
        val, val_x = run.val, run.val_embeddings
    else:
        val, val_x = embed_dataset(classifier.backbone, run.val, run.cache if frozen else None, run.precision,
                                   run.strict)
    record = classifier.head.calibrate(val_x, val.labels, seed=run.seed, calibrate=calibrate)
    if record is not None:
        log.info("%s", classifier.head.task.describe_tuning(record))
    return record


@dataclass
class _FitPlan:
    """What `fit` was asked for, validated before any work: the option objects, the strategy and the task."""

    data: Any
    backbone: BackboneOptions
    plan: Strategy
    task: Task
    data_options: DataOptions
    run_options: RunOptions
    run_dir: Path | None
    started: float = field(default_factory=time.perf_counter)
    source: str = ""  # the data as the manifest names them (a DataFrame: its name, not its repr); set by stage 1
    extraction: EngineChoice | None = None  # what computes the embedding pass; set with the training run


@discard_failed_run_folder  # a fit that fails leaves no empty run folder behind
def fit(
    data: str | Path | Dataset | Splits | InMemoryData,
    backbone: str | BackboneOptions = "efficientnet_lite0",
    strategy: str | Strategy | None = None,
    *,
    out: str | Path | None = None,
    task: str | Task | TaskOptions | None = None,
    data_options: DataOptions | None = None,
    run_options: RunOptions | None = None,
    **settings: Any,
) -> TrainedModel:
    """Train a model on `data` with a pre-trained `backbone` and a `strategy`, then test it.

    `data`: a folder, a table file or a built-in name; or in memory, a pandas DataFrame (texts, or image/audio file
    paths, and labels; columns found by name or given in `data_options`), an `(items, labels)` pair of lists, a
    `Dataset` or `Splits`. `backbone`: a name (see `list_backbones`) or folder, or `BackboneOptions` (local
    `weights`, `pretrained`, `image_size`, `max_length`).

    `strategy` is a name ("probe", "finetune", or any registered one; None: the task's default, probe, or
    finetune for token tagging) with its settings as keyword arguments
    (`epochs=3`, `lr=1e-4`, `head="mlp"`, ...), or a strategy object such as `FineTune(epochs=3, weight_decay=0.05)`.
    `task`: what is predicted: a name ("classification", "multilabel", "regression", "tokens"), `TaskOptions`
    (the name and the task's settings: `label_separator`, `target`, `coverage`, `regression_loss`, `repair_tags`)
    or a Task object; None: classification unless the data call for another (CoNLL files: tokens).
    `data_options` (`DataOptions`): columns, split sizes, labels per class, held-out `test` data, `strict`.
    `run_options` (`RunOptions`): seed, precision and evaluation precision, the extraction engine, cache, resume,
    overwrite, calibrate, logger. Any field of these option objects may also be given as a keyword argument (`seed=1`,
    `image_size=64`): it is set on the object (docs/usage.md, "Python: option objects").

    The model is evaluated on the held-out test split; with `out`, it is saved to OUT/model and the metrics to
    OUT/metrics.json. `out` is checked before any work: a folder holding files headstart did not write is
    refused unless `overwrite=True` (which still replaces only headstart's own files). The split plan (sizes and
    sources) is logged before training, with a warning when the test split has fewer than 100 items.
    Returns the trained model (its `.metrics` hold the test results).
    """
    request = _plan_fit(data, backbone, strategy, out, task, data_options, run_options, settings)
    splits = _prepare_data(request)
    net = _build(request, splits)
    run = _training_run(request, net, splits)
    with using_engine(request.extraction):
        with run.closing_logger():
            classifier, training = _timed(run, "train", request.plan.train, run)
        calibration = _timed(run, "calibrate", _tune, classifier, run, request.plan.freezes_backbone,
                             request.run_options.calibrate)
    tested = _timed(run, "evaluate", _test_stage, request, classifier, run, splits)
    manifest = _manifest(request, classifier, splits, run, tested, training, calibration)
    return _save(request, TrainedModel(classifier, splits.classes, manifest), tested.digests)


def _plan_fit(data: Any, backbone: str | BackboneOptions, strategy: str | Strategy | None, out: str | Path | None,
              task: str | Task | TaskOptions | None, data_options: DataOptions | None,
              run_options: RunOptions | None, settings: dict[str, Any]) -> _FitPlan:
    """Stage 0: the options sorted into their objects and checked, the strategy and task made, the run folder
    checked, all before any work."""
    settings = dict(settings)
    backbone = sorted_into(backbone_options(backbone), BackboneOptions, settings, {"backbone": "name"})
    data_options = sorted_into(data_options, DataOptions, settings)
    run_options = sorted_into(run_options, RunOptions, settings)
    wanted = task_options(task)
    if isinstance(wanted, TaskOptions):
        wanted = sorted_into(wanted, TaskOptions, settings)
    made = wanted.make(data) if isinstance(wanted, TaskOptions) else wanted
    plan = make_strategy(strategy or made.default_strategy, settings)
    check_task(plan, made)
    if distributed.world_size() > 1 and not plan.runs_distributed:
        ready = ", ".join(name for name, kind in STRATEGIES.items() if kind.runs_distributed)
        raise SettingsError(f"--strategy {plan.name} does not run on several processes yet: under torchrun use "
                            f"--strategy {ready}, or run it as one process")
    logger = run_options.logger
    if logger != "csv" and out is None:
        raise SettingsError(f"--logger {logger} writes the training curves into the run folder: pass out=... (--out)")
    if plan.needs_run_dir and out is None:
        raise HeadstartError(f"{plan.name} needs an output folder for its checkpoints: pass out=... (--out)")
    run_dir = Path(out).expanduser() if out is not None else None
    if run_dir is not None:  # an unusable --out fails now, not after training
        check_run_folder(run_dir, overwrite=run_options.overwrite)
    return _FitPlan(data, backbone, plan, made, data_options, run_options, run_dir)


def _prepare_data(request: _FitPlan) -> Splits:
    """Stage 1: the train/validation/test splits, with a teacher's pseudo-labels (distill) added to train."""
    o, seed = request.data_options, request.run_options.seed
    splits = prepare_splits(request.data, o.text_column, o.label_column, o.val_size, o.test_size, o.labels_per_class,
                            seed, o.test, request.task)
    request.source = str(request.data) if isinstance(request.data, (str, Path)) else splits.train.name
    pseudo_labels = o.pseudo_labels
    if pseudo_labels is None:
        return splits
    if pseudo_labels.dataset.classes != splits.classes:
        raise DataError(f"{request.source}: its classes {splits.classes} differ from the "
                        f"pseudo-labels' {pseudo_labels.dataset.classes}: give the data the teacher was fitted on")
    train = splits.train.concatenate(pseudo_labels.dataset, f"{splits.train.name}+{pseudo_labels.dataset.name}")
    train = replace(train, origin=f"{splits.origins()['train']} and {len(pseudo_labels.dataset):,} items a "
                                  "teacher labeled")
    return Splits(train, splits.val, splits.test)


def _build(request: _FitPlan, splits: Splits) -> Backbone:
    """Stage 2: the backbone, for the data's modality, and the plan logged."""
    torch.manual_seed(request.run_options.seed)  # random weights (a new head, a backbone from scratch) are the seed's
    name = request.backbone.name
    net = request.backbone.resolve(splits.modality)
    ensure_same_modality(net.modality, splits.modality, f"backbone '{name}'", "the data are",
                         f"try --backbone {get_modality(splits.modality).suggested_backbone}", HeadstartError)
    log.info("data: %s; task: %s, %s; backbone: %s; strategy: %s", splits.summary(), request.task.name,
             request.task.describe(splits.classes), name, request.plan.name)
    _log_split_plan(splits)
    return net


def _training_run(request: _FitPlan, net: Backbone, splits: Splits) -> TrainingRun:
    """What the strategy trains on, the run recorded in its folder (what --resume must find unchanged)."""
    b, r = request.backbone, request.run_options
    if request.run_dir is not None:
        config = {"backbone": b.name, "weights": b.weights, "pretrained": b.pretrained, "image_size": b.image_size,
                  "max_length": b.max_length, "seed": r.seed, "precision": r.precision, "task": request.task.name,
                  "task_settings": request.task.settings()}
        record_run(request.run_dir, "fit", _run_config(config, request.plan, splits), resume=r.resume)
    request.extraction = _extraction_engine(net, r.engine, r.precision, splits, request.plan.freezes_backbone)
    store = backbone_cache(net, cache_precision(request.extraction.engine, r.precision), r.cache)
    run = TrainingRun(net, splits.train, splits.val, splits.classes, request.run_dir, r.precision, r.seed,
                      request.data_options.strict, r.resume, cache=store, logger=r.logger)
    run.timings["load"] = time.perf_counter() - request.started
    return run


def _extraction_engine(net: Backbone, engine: str, precision: str, splits: Splits, frozen: bool) -> EngineChoice:
    """The engine of fit's embedding pass: `engine` as given, or auto's choice for the items to embed. A strategy
    that changes the backbone embeds little with the backbone as loaded: PyTorch, with nothing measured."""
    if not frozen:
        return EngineChoice(engine, "torch", "the backbone is trained", precision)
    items = sum(len(p) for p in (splits.train, splits.val) if p is not None)  # the test split: PyTorch (fit)
    return choose_engine(net, engine, precision, splits.train.items, default_device(), n_items=items)


def _timed(run: TrainingRun, stage: str, function: Any, *args: Any) -> Any:
    """`function(*args)`, its time recorded in the run's timings under `stage`."""
    t = time.perf_counter()
    try:
        return function(*args)
    finally:
        run.timings[stage] = time.perf_counter() - t


@dataclass
class _Tested:
    """What the test stage found: the readable test items, the metrics, the precisions, the item digests and the
    caches used."""

    test: Dataset
    metrics: dict[str, Any]
    trained_at: str
    evaluated_at: str
    digests: ItemDigests
    caches: list[EmbeddingCache]
    test_source: str | None


def _test_stage(request: _FitPlan, classifier: Classifier, run: TrainingRun, splits: Splits) -> _Tested:
    """Stage 4: the metrics on the test split at the evaluation precision, as `evaluate` and `report` compute them
    (the frozen backbone's embeddings from the cache where the precision allows)."""
    r, test = request.run_options, request.data_options.test
    evaluated_at = batch_precision(r.evaluation_precision, run.backbone.modality, len(splits.test))
    trained_at = resolve_precision(r.precision, default_device())
    # The test metrics are PyTorch's, as `evaluate` and `report` reproduce them: the test cache is PyTorch's too.
    same_cache = evaluated_at == trained_at and request.extraction.engine == "torch"
    test_cache = (run.cache if same_cache else backbone_cache(run.backbone, evaluated_at, r.cache)
                  ) if request.plan.freezes_backbone else None
    digests = ItemDigests.of(splits.modality, [p.items for p in (splits.train, splits.val) if p is not None],
                             splits.test.items)
    _warn_if_test_overlaps(digests)
    test_source = (None if test is None else str(test) if isinstance(test, (str, Path))
                   else f"{IN_MEMORY_TEST}{splits.test.name}")
    where = (f"the recorded test data {test_source}" if test_source
             else f"the recorded test split of {request.source}")
    tested, metrics = _test(classifier, splits.test, test_cache, evaluated_at, request.data_options.strict, where)
    caches = [c for c in {id(c): c for c in (run.cache, test_cache)}.values() if c is not None]
    return _Tested(tested, metrics, trained_at, evaluated_at, digests, caches, test_source)


def _manifest(request: _FitPlan, classifier: Classifier, splits: Splits, run: TrainingRun, tested: _Tested,
              training: dict[str, Any], calibration: dict[str, Any] | None) -> ModelManifest:
    """Stage 5: the manifest: what was trained on what, how, and what it scored."""
    o, r, caches = request.data_options, request.run_options, tested.caches
    run.timings["total"] = time.perf_counter() - request.started
    return ModelManifest(
        modality=run.backbone.modality, classes=splits.classes, backbone_name=request.backbone.name,
        backbone=run.backbone.spec, head=HeadConfig(**classifier.head.config),
        strategy=StrategyRecord(name=request.plan.name, settings=request.plan.settings()),
        data=DataRecord(source=request.source,
                        splits={"train": len(run.train), "val": len(run.val), "test": len(tested.test)},
                        labels_per_class=o.labels_per_class, seed=r.seed, val_size=o.val_size,
                        test_size=o.test_size, text_column=o.text_column, label_column=o.label_column,
                        distillation=o.pseudo_labels.record if o.pseudo_labels is not None else None,
                        test_source=tested.test_source, origins=splits.origins()),
        precision=r.precision, training_precision=tested.trained_at,
        evaluation_precision=tested.evaluated_at, training=training, metrics=tested.metrics,
        timings={k: round(v, 2) for k, v in run.timings.items()},
        embedding_cache={"hits": sum(c.hits for c in caches), "misses": sum(c.misses for c in caches)} if caches else None,
        calibration=calibration, extraction_engine=request.extraction.record(),
    )


def _save(request: _FitPlan, model: TrainedModel, digests: ItemDigests) -> TrainedModel:
    """Stage 6: the model saved to RUN/model, RUN/metrics.json linked to its metrics."""
    model.item_digests = digests
    if request.run_dir is not None:
        model.save(request.run_dir / "model")
        link_metrics(request.run_dir, METRICS)
    model.run_dir = request.run_dir
    return model
