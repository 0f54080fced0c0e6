"""The Python API: fit, evaluate, explain, report. The CLI is a thin layer over these functions (`headstart.load`
is `model.load`: loading imports no training code)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from . import distributed
from ._util import default_device, resolve_precision, sha256_bytes
from .artifact import METRICS, ItemDigests
from .backbones import resolve_backbone
from .backbones.base import Backbone
from .data import Dataset, PseudoLabels, Splits, data_task, load_data, make_splits, read_test_data
from .data.frames import InMemoryData
from .embedding_cache import EmbeddingCache, backbone_cache
from .embeddings import embed_dataset
from .errors import DataError, HeadstartError, SettingsError
from .extraction_engines import (
    EngineChoice,
    cache_precision,
    check_engine,
    choose_engine,
    using_engine,
)
from .heads import Classifier
from .manifests import DataRecord, HeadConfig, ModelManifest, StrategyRecord
from .modalities import ensure_same_modality, get_modality
from .model import EVALUATION_PRECISION, IN_MEMORY_TEST, TrainedModel, batch_precision, evaluate_items
from .run_folder import check_run_folder, discard_failed_run_folder, link_metrics, record_run
from .settings import PRECISIONS, check_choice, check_range
from .strategies import Strategy, TrainingRun, make_strategy
from .strategies.base import STRATEGIES, check_task
from .tasks import Task, make_task
from .training import check_logger

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


def _extraction_engine(net: Backbone, engine: str, precision: str, splits: Splits, frozen: bool) -> EngineChoice:
    """The engine of fit's embedding pass: `engine` as given, or auto's choice for the items to embed. A strategy
    that changes the backbone embeds little with the backbone as loaded: PyTorch, with nothing measured."""
    if not frozen:
        return EngineChoice(engine, "torch", "the backbone is trained", precision)
    items = sum(len(p) for p in (splits.train, splits.val) if p is not None)  # the test split: PyTorch (fit)
    return choose_engine(net, engine, precision, splits.train.items, default_device(), n_items=items)


@discard_failed_run_folder  # a fit that fails leaves no empty run folder behind
def fit(
    data: str | Path | Dataset | Splits | InMemoryData,
    backbone: str = "efficientnet_lite0",
    strategy: str | Strategy | None = None,
    *,
    out: str | Path | None = None,
    labels_per_class: int | None = None,
    val_size: float | int = 0.1,
    test_size: float | int = 0.2,
    seed: int = 0,
    text_column: str | None = None,
    label_column: str | None = None,
    weights: str | None = None,
    pretrained: bool = True,
    image_size: int | None = None,
    max_length: int | None = None,
    precision: str = "auto",
    evaluation_precision: str = EVALUATION_PRECISION,
    engine: str = "auto",
    cache: bool = True,
    strict: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    calibrate: bool = True,
    pseudo_labels: PseudoLabels | None = None,
    test: str | Path | Dataset | None = None,
    task: str | Task | None = None,
    label_separator: str | None = None,
    target: str | list[str] | None = None,
    coverage: float | None = None,
    regression_loss: str | None = None,
    repair_tags: bool | None = None,
    logger: str = "csv",
    **settings: Any,
) -> TrainedModel:
    """Train a classifier on `data` with a pre-trained `backbone` and a `strategy`, then test it.

    `data`: a folder, a table file or a built-in name; or in memory, a pandas DataFrame (texts, or image/audio file
    paths, and labels; columns found by name or given with `text_column`/`label_column`), an `(items, labels)`
    pair of lists, a `Dataset` or `Splits`.

    `strategy` is a name ("probe", "finetune", or any registered one; None: the task's default, probe, or
    finetune for token tagging) with its settings as keyword arguments
    (`epochs=3`, `lr=1e-4`, `head="mlp"`, ...), or a strategy object such as `FineTune(epochs=3, weight_decay=0.05)`.
    The model is evaluated on the held-out test split; with `out`, it is saved to OUT/model and the metrics to
    OUT/metrics.json. `out` is checked before any work: a folder holding files headstart did not write is
    refused unless `overwrite=True` (which still replaces only headstart's own files). With `calibrate` (the
    default) the probabilities are calibrated by temperature scaling on the validation split before testing (kept
    only when cross-validation on that split shows it helps; the manifest's calibration record says which and why).
    `test`: labeled held-out data (anything `data` can be but Splits; its own test split if it defines one) to
    test on instead of a split cut from `data` (which then ignores `test_size`); its classes must be the training
    classes. A test/ folder beside train/ in `data` is used the same way. The split plan (sizes and sources) is
    logged before training, with a warning when the test split has fewer than 100 items.
    `pseudo_labels` (set by `distill`): a teacher's labels for unlabeled items, added to the training split after
    splitting, so that validation and test are the real ones the teacher had; the manifest records their origin.
    `precision` is what training and embedding for it compute in; the test metrics are measured at
    `evaluation_precision` (fp32 unless asked), which the manifest records with what `auto` resolved to, so that
    `evaluate` and `report` reproduce them exactly. `engine`: what computes a frozen backbone's embeddings (torch,
    onnx, openvino; auto: the fastest measured for the backbone on this CPU, see `headstart.extraction_engines`),
    recorded in the manifest. The model folder also records which items (by content) it
    was fitted and tested on, so that `evaluate` never scores training items.
    `task`: what is predicted: "classification" (one class per item), "multilabel" (any number of labels per item:
    a label cell holds them joined by `label_separator`, "|" by default; per-label thresholds are tuned on the
    validation split) or "regression" (the numeric `target` column(s), e.g. "valence" or ["valence", "arousal"];
    `regression_loss` mse or huber; prediction intervals of `coverage`, 0.9 by default, by split conformal
    prediction), "tokens" (a tag per word, for named entities: CoNLL files or a table of `tokens` and `tags` lists;
    chosen by itself for CoNLL files; `repair_tags` starts an entity at an I- tag that continues none), or a Task
    object; None: classification unless the data call for another; the task's settings are recorded in the model.
    `logger`: what the training curves in OUT/logs are written as: "csv" (the default), "tensorboard" (event files)
    or "mlflow" (a run in OUT/logs/mlflow.db, or at MLFLOW_TRACKING_URI when set); it needs `out`.
    Returns the trained model (its `.metrics` hold the test results).
    """
    task = make_task(task or data_task(data) or "classification", label_separator=label_separator, target=target,
                     coverage=coverage, regression_loss=regression_loss, repair_tags=repair_tags)
    plan = make_strategy(strategy or task.default_strategy, settings)
    check_task(plan, task)
    if distributed.world_size() > 1 and not plan.runs_distributed:
        ready = ", ".join(name for name, kind in STRATEGIES.items() if kind.runs_distributed)
        raise SettingsError(f"--strategy {plan.name} does not run on several processes yet: under torchrun use "
                            f"--strategy {ready}, or run it as one process")
    check_choice("precision", precision, PRECISIONS)
    check_choice("evaluation_precision", evaluation_precision, PRECISIONS)
    check_engine(engine)
    check_range("image_size", image_size, low=1, integer=True)
    check_range("max_length", max_length, low=1, integer=True)
    check_range("seed", seed, low=0, integer=True)
    check_logger(logger)
    if logger != "csv" and out is None:
        raise SettingsError(f"--logger {logger} writes the training curves into the run folder: pass out=... (--out)")
    if plan.needs_run_dir and out is None:
        raise HeadstartError(f"{plan.name} needs an output folder for its checkpoints: pass out=... (--out)")
    run_dir = Path(out).expanduser() if out is not None else None
    if run_dir is not None:  # an unusable --out fails now, not after training
        check_run_folder(run_dir, overwrite=overwrite)
    started = time.perf_counter()
    splits = prepare_splits(data, text_column, label_column, val_size, test_size, labels_per_class, seed, test, task)
    source = str(data) if isinstance(data, (str, Path)) else splits.train.name  # a DataFrame: its name, not repr
    test_source = (None if test is None else str(test) if isinstance(test, (str, Path))
                   else f"{IN_MEMORY_TEST}{splits.test.name}")
    if pseudo_labels is not None:
        if pseudo_labels.dataset.classes != splits.classes:
            raise DataError(f"{source}: its classes {splits.classes} differ from the pseudo-labels' "
                            f"{pseudo_labels.dataset.classes}: give the data the teacher was fitted on")
        train = splits.train.concatenate(pseudo_labels.dataset, f"{splits.train.name}+{pseudo_labels.dataset.name}")
        train = replace(train, origin=f"{splits.origins()['train']} and {len(pseudo_labels.dataset):,} items a "
                                      "teacher labeled")
        splits = Splits(train, splits.val, splits.test)
    torch.manual_seed(seed)  # random weights (a new head, a backbone from scratch) are the seed's
    net = resolve_backbone(backbone, weights=weights, pretrained=pretrained, image_size=image_size,
                           max_length=max_length, modality=splits.modality)
    ensure_same_modality(net.modality, splits.modality, f"backbone '{backbone}'", "the data are",
                         f"try --backbone {get_modality(splits.modality).suggested_backbone}", HeadstartError)
    log.info("data: %s; task: %s, %s; backbone: %s; strategy: %s", splits.summary(), task.name,
             task.describe(splits.classes), backbone, plan.name)
    _log_split_plan(splits)
    if run_dir is not None:
        config = {"backbone": backbone, "weights": weights, "pretrained": pretrained, "image_size": image_size,
                  "max_length": max_length, "seed": seed, "precision": precision, "task": task.name,
                  "task_settings": task.settings()}
        record_run(run_dir, "fit", _run_config(config, plan, splits), resume=resume)
    extraction = _extraction_engine(net, engine, precision, splits, plan.freezes_backbone)
    run = TrainingRun(net, splits.train, splits.val, splits.classes, run_dir, precision, seed, strict, resume,
                      cache=backbone_cache(net, cache_precision(extraction.engine, precision), cache), logger=logger)
    run.timings["load"] = time.perf_counter() - started
    t = time.perf_counter()
    with run.closing_logger(), using_engine(extraction):
        classifier, training = plan.train(run)
    run.timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    with using_engine(extraction):
        calibration = _tune(classifier, run, plan.freezes_backbone, calibrate)
    run.timings["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    evaluated_at = batch_precision(evaluation_precision, net.modality, len(splits.test))  # as `evaluate` resolves it
    trained_at = resolve_precision(precision, default_device())
    # The test metrics are PyTorch's, as `evaluate` and `report` reproduce them: the test cache is PyTorch's too.
    test_cache = (run.cache if evaluated_at == trained_at and extraction.engine == "torch"
                  else backbone_cache(net, evaluated_at, cache)) if plan.freezes_backbone else None
    digests = ItemDigests.of(splits.modality, [p.items for p in (splits.train, splits.val) if p is not None],
                             splits.test.items)
    _warn_if_test_overlaps(digests)
    where = f"the recorded test data {test_source}" if test_source else f"the recorded test split of {source}"
    test, metrics = _test(classifier, splits.test, test_cache, evaluated_at, strict, where)
    run.timings["evaluate"] = time.perf_counter() - t
    caches = [c for c in {id(c): c for c in (run.cache, test_cache)}.values() if c is not None]
    run.timings["total"] = time.perf_counter() - started
    manifest = ModelManifest(
        modality=net.modality, classes=splits.classes, backbone_name=backbone, backbone=net.spec,
        head=HeadConfig(**classifier.head.config), strategy=StrategyRecord(name=plan.name, settings=plan.settings()),
        data=DataRecord(source=source, splits={"train": len(run.train), "val": len(run.val), "test": len(test)},
                        labels_per_class=labels_per_class, seed=seed, val_size=val_size, test_size=test_size,
                        text_column=text_column, label_column=label_column,
                        distillation=pseudo_labels.record if pseudo_labels is not None else None,
                        test_source=test_source,
                        origins=splits.origins()),
        precision=precision, training_precision=trained_at,
        evaluation_precision=evaluated_at, training=training, metrics=metrics,
        timings={k: round(v, 2) for k, v in run.timings.items()},
        embedding_cache={"hits": sum(c.hits for c in caches), "misses": sum(c.misses for c in caches)} if caches else None,
        calibration=calibration, extraction_engine=extraction.record(),
    )
    model = TrainedModel(classifier, splits.classes, manifest)
    model.item_digests = digests
    if run_dir is not None:
        model.save(run_dir / "model")
        link_metrics(run_dir, METRICS)
    model.run_dir = run_dir
    return model
