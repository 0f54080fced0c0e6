"""The Python API: fit, load, evaluate. The CLI is a thin layer over these functions."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ._util import atomic_symlink, sha256_bytes
from .artifact import METRICS
from .backbones import resolve_backbone
from .data import Dataset, PseudoLabels, Splits, load_data, make_splits
from .embedding_cache import EmbeddingCache, backbone_cache
from .embeddings import embed_dataset
from .errors import DataError, HeadstartError
from .evaluation.metrics import classification_metrics
from .heads import Classifier
from .manifests import DataRecord, HeadConfig, ModelManifest, StrategyRecord
from .modalities import ensure_same_modality, get_modality
from .model import TrainedModel
from .run_folder import check_run_folder, discard_failed_run_folder, record_run
from .strategies import Strategy, TrainingRun, make_strategy
from .strategies.base import check_choice, check_range
from .training import PRECISIONS

log = logging.getLogger("headstart")

__all__ = ["evaluate", "explain", "fit", "load", "report"]


def load(path: str | Path, runtime: str = "torch", threads: int | None = None) -> Any:
    """Load a saved model folder (RUN/model) to predict with.

    `runtime="torch"` gives the `TrainedModel`; `"onnx"` (`"onnx-int8"`) runs the exported RUN/model/model.onnx
    (model.int8.onnx) with ONNX Runtime, and `"openvino"` (`"openvino-int8"`) the same file with OpenVINO: an
    `OnnxClassifier` with the same `scores`/`predict_proba`/`predict` (`threads` limits their threads). A
    deployment without torch calls `headstart.runtime.load` directly.
    """
    if runtime == "torch":
        return TrainedModel.load(path)
    from .runtime import load_runtime

    return load_runtime(path, runtime, threads)


def evaluate(model: TrainedModel | str | Path, data: Dataset | str | Path, **options: Any) -> dict[str, Any]:
    """Metrics of a model (or saved model folder) on labeled data."""
    model = model if isinstance(model, TrainedModel) else TrainedModel.load(model)
    return model.evaluate(data, **options)


def explain(model: TrainedModel | str | Path, items: list, out: str | Path | None = None,
            method: str | None = None) -> list[dict[str, Any]]:
    """Explain each item's prediction: occlusion (or `method="gradcam"`) for images, Integrated Gradients over
    tokens for texts (`method`: one of the modality's registered explainers, its default when None). With `out`,
    each explanation is written there (a PNG overlay, an HTML snippet). Returns one JSON-ready record per item."""
    from .explain import explainer_for

    model = model if isinstance(model, TrainedModel) else TrainedModel.load(model)
    explainer = explainer_for(model, method)
    records = []
    for i, e in enumerate(explainer.explain(items)):
        if out is not None:
            name = f"{i:03d}-{explainer.file_stem(e.item)[:40]}{explainer.file_suffix}"
            e.file = explainer.save(e, Path(out).expanduser() / name)
        record: dict[str, Any] = {"input": str(e.item), "label": e.label, "score": round(e.score, 4),
                                  "method": explainer.method}
        if e.units:
            record["top_tokens"] = [[t, round(v, 4)] for t, v in explainer.describe(e)]
        if e.file is not None:
            record["file"] = str(e.file)
        records.append(record)
    return records


def report(run: str | Path, data: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Write RUN/report.html (or `out`): one self-contained page with what was trained on what, metrics with
    bootstrap intervals, per-class results, the confusion matrix, reliability before and after calibration, learning
    curves and the most confident mistakes with their explanations. `data`: evaluate on other labeled data."""
    from .report import build_report

    return build_report(run, data, out)


def prepare_splits(data: Any, text_column: str | None, label_column: str | None, val_size: float | int,
                   test_size: float | int, labels_per_class: int | None, seed: int) -> Splits:
    """The train/validation/test splits `fit` trains and tests on, from any data it accepts."""
    if isinstance(data, Splits):
        raw = data
    elif isinstance(data, Dataset):
        raw = Splits(data, None, None)
    else:
        raw = load_data(data, text_column, label_column)
    return make_splits(raw, val_size, test_size, labels_per_class, seed)


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


def _test(classifier: Classifier, test: Dataset, cache: EmbeddingCache | None, precision: str, strict: bool
          ) -> tuple[Dataset, dict[str, Any]]:
    """The readable part of the test split and the classifier's metrics on it."""
    test, test_x = embed_dataset(classifier.backbone, test, cache, precision, strict)
    if len(test) == 0:
        raise DataError(f"the test split ({test.name}) has no readable items: add readable files or give a larger "
                        "--test-size")
    return test, classification_metrics(test.labels, classifier.head.probabilities(test_x), test.classes,
                                        classifier.head.config["temperature"])


def _calibrate(classifier: Classifier, run: TrainingRun, frozen: bool) -> dict[str, Any]:
    """Temperature scaling of the trained classifier on the validation split (embeddings from the cache when the
    backbone stayed frozen)."""
    if frozen and run.val_embeddings is not None:  # the backbone did not change since the strategy embedded them
        val, val_x = run.val, run.val_embeddings
    else:
        val, val_x = embed_dataset(classifier.backbone, run.val, run.cache if frozen else None, run.precision,
                                   run.strict)
    record = classifier.head.calibrate(val_x, val.labels)
    if record["method"] == "none":
        log.info("not calibrated: %s (temperature left at 1)", record["reason"])
    else:
        log.info("calibrated on %d validation items: temperature %.3f, ECE %.4f -> %.4f", record["n"],
                 record["temperature"], record["ece_before"], record["ece_after"])
    return record


@discard_failed_run_folder  # a fit that fails leaves no empty run folder behind
def fit(
    data: str | Path | Dataset | Splits,
    backbone: str = "efficientnet_lite0",
    strategy: str | Strategy = "probe",
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
    cache: bool = True,
    strict: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    calibrate: bool = True,
    pseudo_labels: PseudoLabels | None = None,
    **settings: Any,
) -> TrainedModel:
    """Train a classifier on `data` with a pre-trained `backbone` and a `strategy`, then test it.

    `strategy` is a name ("probe", "finetune", or any registered one) with its settings as keyword arguments
    (`epochs=3`, `lr=1e-4`, `head="mlp"`, ...), or a strategy object such as `FineTune(epochs=3, weight_decay=0.05)`.
    The model is evaluated on the held-out test split; with `out`, it is saved to OUT/model and the metrics to
    OUT/metrics.json. `out` is checked before any work: a folder holding files headstart did not write is
    refused unless `overwrite=True` (which still replaces only headstart's own files). With `calibrate` (the
    default) the probabilities are calibrated by temperature scaling on the validation split before testing.
    `pseudo_labels` (set by `distill`): a teacher's labels for unlabeled items, added to the training split after
    splitting, so that validation and test are the real ones the teacher had; the manifest records their origin.
    Returns the trained model (its `.metrics` hold the test results).
    """
    plan = make_strategy(strategy, settings)
    check_choice("precision", precision, PRECISIONS)
    check_range("image_size", image_size, low=1, integer=True)
    check_range("max_length", max_length, low=1, integer=True)
    check_range("seed", seed, low=0, integer=True)
    if plan.needs_run_dir and out is None:
        raise HeadstartError(f"{plan.name} needs an output folder for its checkpoints: pass out=... (--out)")
    run_dir = Path(out).expanduser() if out is not None else None
    if run_dir is not None:  # an unusable --out fails now, not after training
        check_run_folder(run_dir, overwrite=overwrite)
    started = time.perf_counter()
    splits = prepare_splits(data, text_column, label_column, val_size, test_size, labels_per_class, seed)
    source = str(data) if not isinstance(data, (Dataset, Splits)) else splits.train.name
    if pseudo_labels is not None:
        if pseudo_labels.dataset.classes != splits.classes:
            raise DataError(f"{source}: its classes {splits.classes} differ from the pseudo-labels' "
                            f"{pseudo_labels.dataset.classes}: give the data the teacher was fitted on")
        train = splits.train.concatenate(pseudo_labels.dataset, f"{splits.train.name}+{pseudo_labels.dataset.name}")
        splits = Splits(train, splits.val, splits.test)
    torch.manual_seed(seed)  # random weights (a new head, a backbone from scratch) are the seed's
    net = resolve_backbone(backbone, weights=weights, pretrained=pretrained, image_size=image_size,
                           max_length=max_length, modality=splits.modality)
    ensure_same_modality(net.modality, splits.modality, f"backbone '{backbone}'", "the data are",
                         f"try --backbone {get_modality(splits.modality).suggested_backbone}", HeadstartError)
    log.info("data: %s; classes: %d; backbone: %s; strategy: %s", splits.summary(), len(splits.classes), backbone,
             plan.name)
    if run_dir is not None:
        config = {"backbone": backbone, "weights": weights, "pretrained": pretrained, "image_size": image_size,
                  "max_length": max_length, "seed": seed, "precision": precision}
        record_run(run_dir, "fit", _run_config(config, plan, splits), resume=resume)
    run = TrainingRun(net, splits.train, splits.val, splits.classes, run_dir, precision, seed, strict, resume,
                      cache=backbone_cache(net, precision, cache))
    run.timings["load"] = time.perf_counter() - started
    t = time.perf_counter()
    classifier, training = plan.train(run)
    run.timings["train"] = time.perf_counter() - t
    calibration = None
    if calibrate:
        t = time.perf_counter()
        calibration = _calibrate(classifier, run, plan.freezes_backbone)
        run.timings["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    test, metrics = _test(classifier, splits.test, run.cache if plan.freezes_backbone else None, precision, strict)
    run.timings["evaluate"] = time.perf_counter() - t
    run.timings["total"] = time.perf_counter() - started
    manifest = ModelManifest(
        modality=net.modality, classes=splits.classes, backbone_name=backbone, backbone=net.spec,
        head=HeadConfig(**classifier.head.config), strategy=StrategyRecord(name=plan.name, settings=plan.settings()),
        data=DataRecord(source=source, splits={"train": len(run.train), "val": len(run.val), "test": len(test)},
                        labels_per_class=labels_per_class, seed=seed, val_size=val_size, test_size=test_size,
                        text_column=text_column, label_column=label_column,
                        distillation=pseudo_labels.record if pseudo_labels is not None else None),
        precision=precision, training=training, metrics=metrics,
        timings={k: round(v, 2) for k, v in run.timings.items()},
        embedding_cache={"hits": run.cache.hits, "misses": run.cache.misses} if run.cache is not None else None,
        calibration=calibration,
    )
    model = TrainedModel(classifier, splits.classes, manifest)
    if run_dir is not None:
        model.save(run_dir / "model")
        atomic_symlink(run_dir / METRICS, f"model/{METRICS}")  # RUN/metrics.json always follows RUN/model
    model.run_dir = run_dir
    return model
