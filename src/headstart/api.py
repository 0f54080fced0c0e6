"""The Python API: fit, load, evaluate. The CLI is a thin layer over these functions."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._util import atomic_write_json, sha256_bytes
from .artifact import load_model
from .backbones import resolve_backbone
from .backbones.base import Backbone
from .data import Dataset, Splits, load_data, make_splits
from .data.images import find_unreadable
from .embedding_cache import EmbeddingCache
from .embeddings import embed_items, failure_summary
from .errors import DataError, HeadstartError
from .evaluation.metrics import classification_metrics
from .heads import ClassificationHead, Classifier
from .model import TrainedModel
from .strategies import STRATEGIES
from .strategies.finetune import FineTuning, finetune
from .strategies.probe import HeadTraining, head_probabilities, train_head

log = logging.getLogger("headstart")

__all__ = ["evaluate", "fit", "load"]


def load(path: str | Path) -> TrainedModel:
    """Load a saved model folder (RUN/model)."""
    return load_model(path)


def evaluate(model: TrainedModel | str | Path, data: Dataset | str | Path, **options: Any) -> dict[str, Any]:
    """Metrics of a model (or saved model folder) on labeled data."""
    model = model if isinstance(model, TrainedModel) else load_model(model)
    return model.evaluate(data, **options)


def _drop_unreadable(data: Dataset, failures: list[tuple[int, str]], strict: bool) -> np.ndarray:
    """Indices to keep after unreadable items; warns with a count, or fails with --strict."""
    if not failures:
        return np.arange(len(data))
    message = f"{data.name}: {failure_summary(data.items, failures)}"
    if strict:
        raise DataError(message + " (without --strict they are skipped)")
    log.warning(message)
    return np.setdiff1d(np.arange(len(data)), [i for i, _ in failures])


def _check_classes_usable(train: Dataset) -> None:
    empty = [c for c, n in train.class_counts().items() if n == 0]
    if empty:
        raise DataError(f"class(es) {', '.join(empty)} have no usable training examples: add readable files")


def _embedding_cache(backbone: Backbone, precision: str, enabled: bool) -> EmbeddingCache | None:
    if not (enabled and backbone.is_pretrained):
        return None
    return EmbeddingCache(sha256_bytes(backbone.fingerprint().encode(), precision.encode())[:24])


def _embed_split(backbone: Backbone, data: Dataset, cache, precision: str, strict: bool
                 ) -> tuple[Dataset, np.ndarray]:
    embeddings, failures = embed_items(backbone, data.items, cache, precision, desc=f"embedding {data.name}")
    keep = _drop_unreadable(data, failures, strict)
    if len(keep) == len(data):
        return data, embeddings
    return data.subset(keep), embeddings[keep]


def _head_stage_val_accuracy(head_stage: dict[str, Any]) -> float:
    """Validation accuracy of the head-stage model that train_head kept (its best-loss epoch)."""
    return head_stage["history"][head_stage["best_epoch"]]["val_accuracy"]


def _prepare(data: Any, text_column: str | None, label_column: str | None, val_size: float | int,
             test_size: float | int, labels_per_class: int | None, seed: int) -> Splits:
    if isinstance(data, Splits):
        raw = data
    elif isinstance(data, Dataset):
        raw = Splits(data, None, None)
    else:
        raw = load_data(data, text_column, label_column)
    return make_splits(raw, val_size, test_size, labels_per_class, seed)


def fit(
    data: str | Path | Dataset | Splits,
    backbone: str = "efficientnet_lite0",
    strategy: str = "probe",
    *,
    out: str | Path | None = None,
    labels_per_class: int | None = None,
    epochs: int | None = None,
    head: str = "linear",
    lr: float | None = None,
    lr_ratio: float | None = None,
    batch_size: int | None = None,
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
) -> TrainedModel:
    """Train a classifier on `data` with a pre-trained `backbone` and a `strategy` (probe or finetune).

    The result is evaluated on the held-out test split; with `out`, the model is saved to OUT/model and the
    metrics to OUT/metrics.json. Returns the trained model (its `.metrics` hold the test results).
    """
    if strategy not in STRATEGIES:
        raise HeadstartError(f"unknown strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    if precision not in ("auto", "fp32", "bf16"):
        raise HeadstartError(f"precision must be auto, fp32 or bf16, got '{precision}'")
    if strategy == "finetune" and out is None:
        raise HeadstartError("finetune needs an output folder for its checkpoints: pass out=... (--out)")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    splits = _prepare(data, text_column, label_column, val_size, test_size, labels_per_class, seed)
    torch.manual_seed(seed)
    net = resolve_backbone(backbone, weights=weights, pretrained=pretrained, image_size=image_size,
                           max_length=max_length)
    if net.modality != splits.modality:
        raise HeadstartError(f"backbone '{backbone}' takes {net.modality} inputs, but the data are {splits.modality}"
                             f" (try {'minilm' if splits.modality == 'text' else 'efficientnet_lite0'})")
    log.info("data: %s; classes: %d; backbone: %s; strategy: %s", splits.summary(), len(splits.classes), backbone, strategy)
    timings["load"] = time.perf_counter() - started
    run_dir = Path(out) if out is not None else None
    n_classes = len(splits.classes)
    embedding_cache = _embedding_cache(net, precision, cache)
    head_config = HeadTraining(kind=head, seed=seed, **({"lr": lr} if lr and strategy == "probe" else {}),
                               **({"epochs": epochs} if epochs and strategy == "probe" else {}),
                               **({"batch_size": batch_size} if batch_size and strategy == "probe" else {}))
    t = time.perf_counter()
    training: dict[str, Any] = {}
    train, val, test = splits.train, splits.val, splits.test
    if net.is_pretrained:
        train, train_x = _embed_split(net, train, embedding_cache, precision, strict)
        val, val_x = _embed_split(net, val, embedding_cache, precision, strict)
        _check_classes_usable(train)
        timings["embed"] = time.perf_counter() - t
        t = time.perf_counter()
        classifier_head, training["head_stage"] = train_head(train_x, train.labels, val_x, val.labels, n_classes, head_config)
        timings["head"] = time.perf_counter() - t
    elif strategy == "probe":
        raise HeadstartError(f"backbone '{backbone}' has no pre-trained weights, so a probe would learn on random "
                             "features: use --strategy finetune to train it from scratch")
    else:
        classifier_head = ClassificationHead(net.embedding_dim, n_classes, head)
    classifier = Classifier(net, classifier_head)
    if strategy == "finetune":
        if net.modality == "image" and not net.is_pretrained:  # a pretrained backbone's head stage already decoded them
            train = train.subset(_drop_unreadable(train, find_unreadable(train.items), strict))
            val = val.subset(_drop_unreadable(val, find_unreadable(val.items), strict))
            _check_classes_usable(train)
        config = FineTuning(seed=seed, precision=precision, **({"epochs": epochs} if epochs else {}),
                            **({"lr_ratio": lr_ratio} if lr_ratio else {}),
                            **({"lr": lr} if lr else {}), **({"batch_size": batch_size} if batch_size else {}))
        t = time.perf_counter()
        head_stage = training.get("head_stage")
        baseline = _head_stage_val_accuracy(head_stage) if head_stage else None
        before = copy.deepcopy(classifier.state_dict()) if baseline is not None else None
        training["finetune"] = finetune(classifier, train, val, config, run_dir, net.is_pretrained, resume)
        tuned = training["finetune"]["best_val_accuracy"]
        if baseline is not None and tuned is not None and tuned < baseline:
            # Fine-tuning never beat the frozen backbone + head on validation (tiny data, too high a rate):
            # keep the head-stage model rather than a worse one.
            log.warning("finetune's best validation accuracy %.3f is below the head stage's %.3f: keeping the "
                        "head-stage model (try a lower --lr or more data)", tuned, baseline)
            classifier.load_state_dict(before)
            training["finetune"]["kept"] = "head stage"
        timings["finetune"] = time.perf_counter() - t
    manifest = {
        "backbone_name": backbone,
        "strategy": strategy,
        "data": {"source": str(data) if not isinstance(data, (Dataset, Splits)) else splits.train.name,
                 "splits": {k: len(v) for k, v in (("train", train), ("val", val), ("test", test))},
                 "labels_per_class": labels_per_class, "seed": seed},
        "training": training | {"precision": precision, "head_kind": head},
    }
    model = TrainedModel(classifier, splits.classes, manifest)
    t = time.perf_counter()
    if strategy == "probe":
        test, test_x = _embed_split(net, test, embedding_cache, precision, strict)
        metrics = classification_metrics(test.labels, head_probabilities(classifier_head, test_x), splits.classes)
    else:
        metrics = model.evaluate(test, strict=strict)
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    manifest["metrics"] = metrics
    manifest["timings"] = {k: round(v, 2) for k, v in timings.items()}
    if embedding_cache is not None:
        manifest["embedding_cache"] = {"hits": embedding_cache.hits, "misses": embedding_cache.misses}
    if run_dir is not None:
        model.save(run_dir / "model")
        atomic_write_json(run_dir / "metrics.json", {**metrics, "timings": manifest["timings"],
                                                     "backbone": backbone, "strategy": strategy})
    model.run_dir = run_dir
    return model
