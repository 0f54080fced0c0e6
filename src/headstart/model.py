"""A trained classifier: predict, predict_proba, evaluate, save and load, the same after loading as after training."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ._util import check_precision, default_device, inference_precision, library_versions
from .artifact import ITEMS, MANIFEST, METRICS, ItemDigests, read_item_digests, read_model_dir, write_model_dir
from .data.dataset import Dataset, Splits
from .data.unreadable import drop_failures
from .distributed import on_main
from .embedding_cache import EmbeddingCache
from .embeddings import compute_embeddings, embed_items
from .errors import DataError, HeadstartError, SettingsError
from .heads import Classifier
from .manifests import ModelManifest
from .modalities import ensure_same_modality, get_modality
from .tasks import Task

log = logging.getLogger("headstart")
# The manifest's test_source for test data `fit` was given in memory (a DataFrame, a Dataset): named, not readable.
IN_MEMORY_TEST = "in memory: "
EVALUATION_PRECISION = "fp32"  # what metrics are measured at unless the user asks: the ONNX graph's, no rounding


def model_folder(path: str | Path) -> Path:
    """The model folder a user means: `path` itself, or RUN/model when `path` is a run folder."""
    path = Path(path).expanduser()
    if not (path / MANIFEST).exists() and (path / "model" / MANIFEST).exists():
        return path / "model"
    return path


@dataclass
class Evaluation:
    """A model's scores on labeled items: the items scored (unreadable ones left out), their probabilities, and
    the metrics (with `n`, `skipped`, `evaluated_on` and `evaluation_precision`)."""

    data: Dataset
    probabilities: np.ndarray
    metrics: dict[str, Any]


def class_scores(classifier: Classifier, items: Sequence, precision: str, inference_model: nn.Module | None = None,
                 cache: EmbeddingCache | None = None, desc: str = "predicting", batch_size: int | None = None,
                 words_given: bool = False) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Class probabilities per item (NaN rows for unreadable items) and the (index, reason) failures; embeddings
    from `cache` where it has them; `batch_size` items per model call (default: the modality's). `precision` auto
    is resolved for this call's batches (inference_precision). A task that scores items itself (token tagging:
    per-word tag probabilities) does so instead (`words_given`: labeled items, whose words are known)."""
    precision = batch_precision(precision, classifier.backbone.modality, len(items), batch_size)
    own = classifier.head.task.score_items(classifier, items, precision, inference_model, batch_size, words_given)
    if own is not None:
        return own  # type: ignore[return-value]
    if len(items) == 0:
        return np.zeros((0, classifier.head.config["n_classes"]), np.float32), []
    embeddings, failures = embed_items(classifier.backbone, items, cache, precision, batch_size, desc=desc,
                                       model=inference_model)  # under torchrun: each rank embeds its share
    probs = classifier.head.probabilities(embeddings)
    for i, _ in failures:
        probs[i] = np.nan
    return probs, failures


def batch_precision(precision: str, modality: str, n_items: int, batch_size: int | None = None) -> str:
    """What `precision` computes in for inference on `n_items` items of `modality` in batches of `batch_size`
    (default: the modality's): `auto` resolved for the batches the items make (inference_precision)."""
    batch = min(batch_size or get_modality(modality).default_batch_size, max(n_items, 1))
    return inference_precision(precision, default_device(), modality, batch)


def evaluate_items(classifier: Classifier, data: Dataset, precision: str, strict: bool = False, *,
                   inference_model: nn.Module | None = None, cache: EmbeddingCache | None = None,
                   where: str | None = None, unreadable_hint: str = "") -> Evaluation:
    """Metrics of `classifier` on `data` at one resolved `precision` ("fp32", "bf16"): the one computation behind
    fit's test metrics, `evaluate` and `report`, so that they agree to the last digit on the same items."""
    where = where or data.name
    probs, failures = class_scores(classifier, data.items, precision, inference_model, cache,
                                   desc=f"evaluating {data.name}", words_given=True)
    keep = drop_failures(data, failures, strict)
    if len(keep) == 0:
        raise DataError(f"{where}: none of its {len(data)} items could be read, so there is nothing to evaluate"
                        + unreadable_hint)
    if len(keep) < len(data):
        probs, data = probs[keep], data.subset(keep)
    head = classifier.head
    metrics = {"task": head.task.name, **head.task.metrics(data.labels, probs, data.classes, head.params)}
    metrics |= {"skipped": len(failures), "evaluated_on": where, "evaluation_precision": precision}
    return Evaluation(data, probs, metrics)


class TrainedModel:
    """Backbone + head + class names + the manifest describing how it was made.

    The first prediction makes an inference-ready copy of the backbone (eval mode, channels_last, BatchNorm
    folded into convolutions) and later predictions reuse it. Change the weights after that and call
    `reset_inference()`.

    `precision` is what predictions compute in: by default the precision the model's metrics were measured at
    (fp32 unless fit was asked otherwise), so that a prediction is exactly what the metrics counted and what the
    fp32 ONNX graph gives; `auto` (bfloat16 where the device is fast at it) or `bf16` trade that for speed.
    `item_digests` records which items the model was fitted and tested on (None for older models).
    """

    def __init__(self, classifier: Classifier, classes: Sequence[str], manifest: ModelManifest,
                 precision: str | None = None):
        self.classifier = classifier.eval()
        self.classes = list(classes)
        self.manifest = manifest
        precision = precision or manifest.evaluation_precision or EVALUATION_PRECISION
        check_precision(precision)  # an unknown choice fails here, not at the first prediction
        self.precision = precision
        self.item_digests: ItemDigests | None = None
        self.run_dir: Path | None = None
        self._inference: nn.Module | None = None

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", precision: str | None = None) -> TrainedModel:
        """Rebuild a saved model folder (RUN/model, or the run folder RUN) with no network and no pickle;
        `precision`: what its predictions compute in (auto, fp32, bf16; default: its metrics' precision)."""
        folder = model_folder(path)
        classifier, manifest = read_model_dir(folder, device)
        model = cls(classifier, manifest.classes, manifest, precision)
        model.item_digests = read_item_digests(folder)
        return model

    def recorded_splits(self, data: str | Path | Dataset | Splits | None = None) -> Splits:
        """The train/val/test splits this model was fitted with, rebuilt from its manifest (or from `data`, when
        given, split the same way; test data given apart at fit, `--test`, are read again from where the manifest
        records them unless `data` defines its own test split). A source that is gone is an error that says to
        pass the data."""
        from .data import load_data, make_splits

        record = self.manifest.data
        source = data if data is not None else (record.source if record is not None else None)
        if source is None:
            raise DataError("the model does not record its training data: pass the labeled data it was fitted on "
                            "(--data)")
        try:
            if isinstance(source, (Dataset, Splits)):  # in memory, as `fit` takes it
                raw = source if isinstance(source, Splits) else Splits(source, None, None)
            else:
                options = self.split_options()
                raw = load_data(source, options["text_column"], options["label_column"], classes=self.classes,
                                modality=self.modality, task=self.task)
        except DataError as e:
            raise DataError(f"cannot read the data the model was fitted on ({e}): pass --data PATH") from None
        options = self.split_options()
        if record is not None and record.test_source is not None:  # tested on data given apart: those, always
            raw = Splits(raw.train, raw.val, self._recorded_test_data(record.test_source, raw, data is not None))
        return make_splits(raw, options["val_size"], options["test_size"], options["labels_per_class"], options["seed"])

    def _recorded_test_data(self, test_source: str, raw: Splits, data_given: bool) -> Dataset:
        """The test data given apart at fit (`--test`), read again from where the manifest records them; when they
        cannot be read (moved, or given in memory), the test split of data the caller passes instead."""
        from .data import read_test_data

        options = self.split_options()
        try:
            if test_source.startswith(IN_MEMORY_TEST):
                raise DataError(f"they were given in memory ({test_source.removeprefix(IN_MEMORY_TEST)})")
            return read_test_data(test_source, self.classes, self.modality, options["text_column"],
                                  options["label_column"], self.task)
        except DataError as e:
            if data_given and raw.test is not None:
                return raw.test
            raise DataError(f"cannot read the test data the model was tested on ({e}): pass --data with them in "
                            "a test/ folder (or test table) beside train/") from None

    def split_options(self) -> dict[str, Any]:
        """The `fit` options that split this model's data (`fit`'s defaults where an older manifest lacks them)."""
        record = self.manifest.data
        return {"labels_per_class": record.labels_per_class if record else None,
                "val_size": record.val_size if record and record.val_size is not None else 0.1,
                "test_size": record.test_size if record and record.test_size is not None else 0.2,
                "seed": record.seed if record else 0, "text_column": record.text_column if record else None,
                "label_column": record.label_column if record else None,
                "test": record.test_source if record else None}

    def save(self, path: str | Path) -> Path:
        """Write the model folder atomically: weights, manifest, the backbone's files and `metrics.json` (the test
        metrics, so that they can never belong to another model). Under torchrun every rank calls it and rank 0
        alone writes (the others return once it has)."""
        from datetime import datetime, timezone

        self.manifest = self.manifest.model_copy(update={
            "versions": library_versions(), "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return self._write(Path(path))

    @on_main
    def _write(self, path: Path) -> Path:
        """The writing part of `save` (rank 0's alone under torchrun)."""
        import json

        report = {**self.metrics, "timings": self.manifest.timings, "backbone": self.manifest.backbone_name,
                  "strategy": self.manifest.strategy.name}
        files = {METRICS: (json.dumps(report, indent=2, default=str) + "\n").encode()}
        if self.item_digests is not None:
            files[ITEMS] = self.item_digests.to_bytes()
        try:
            write_model_dir(path, self.classifier, self.manifest, files)
        except OSError as e:  # a full disk, a folder made read-only meanwhile: the previous model is untouched
            raise HeadstartError(f"cannot save the model to {path} ({e.strerror or type(e).__name__}); any previous "
                                 "model there is unchanged: free space or choose another --out") from None
        return path

    @property
    def backbone(self):
        """The feature extractor (a `headstart.backbones.Backbone`), as trained."""
        return self.classifier.backbone

    @property
    def modality(self) -> str:
        """The name of what the model takes: image, text or audio."""
        return self.backbone.modality

    @property
    def metrics(self) -> dict[str, Any]:
        """The test-split metrics `fit` measured, as recorded in the manifest."""
        return self.manifest.metrics

    @property
    def task(self) -> Task:
        """What the model predicts (headstart.tasks): one class, a set of labels, or numbers."""
        return self.classifier.head.task

    @property
    def task_name(self) -> str:
        """The task's name: classification, multilabel or regression."""
        return self.task.name

    @property
    def task_params(self) -> dict[str, Any]:
        """What the task's decisions use (temperature, per-label thresholds, conformal half widths)."""
        return self.classifier.head.params

    def __repr__(self) -> str:
        return (f"TrainedModel(backbone={self.manifest.backbone_name!r}, strategy={self.manifest.strategy.name!r}, "
                f"classes={len(self.classes)})")

    def reset_inference(self) -> None:
        """Drop the inference copy of the backbone, so that the next prediction sees weights changed since."""
        self._inference = None

    def _inference_model(self) -> nn.Module:
        if self._inference is None:
            self._inference = self.backbone.inference_copy(default_device(), fold=True)
        return self._inference

    def scores(self, items: Sequence, precision: str | None = None, batch_size: int | None = None
               ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Class probabilities per item (NaN rows for unreadable items) and the (index, reason) failures, computed
        in `precision` (default: the model's `precision`); `batch_size`: items per model call (default: the
        modality's)."""
        return class_scores(self.classifier, items, precision or self.precision, self._inference_model(),
                            batch_size=batch_size)

    def predict_proba(self, items: Any, *, as_frame: bool = False, text_column: str | None = None,
                      batch_size: int | None = None) -> Any:
        """Probabilities (items x classes). Items: what the backbone's modality takes (image paths, texts ...), as
        a list, a pandas Series, or a DataFrame (its item column: `text_column`, the one the model was fitted
        on, or found by name). `as_frame=True` gives a DataFrame with the class names as columns (and the
        input's index, for a Series or DataFrame)."""
        items, index = self._prediction_items(items, text_column)
        probs, failures = self.scores(items, batch_size=batch_size)
        if failures:
            raise DataError(get_modality(self.modality).failure_summary(items, failures))
        if as_frame:
            import pandas as pd

            return pd.DataFrame(probs, columns=self.classes, index=index)
        return probs

    def predict(self, items: Any, *, text_column: str | None = None, batch_size: int | None = None) -> list[Any]:
        """The prediction for each item (items as `predict_proba` takes them): its most probable class; for a
        multi-label model the list of labels whose scores reach their thresholds; for a regression {target:
        value}."""
        scores = self.predict_proba(items, text_column=text_column, batch_size=batch_size)
        return self.task.decide(scores, self.classes, self.task_params)

    def _prediction_items(self, items: Any, text_column: str | None) -> tuple[Sequence, Any]:
        """A Series or DataFrame as a list of items and its index (None for a list)."""
        from .data.frames import prediction_items

        recorded = self.manifest.data.text_column if self.manifest.data is not None else None
        if text_column is None and recorded in getattr(items, "columns", ()):  # the column the model was fitted on
            text_column = recorded
        return prediction_items(items, self.modality, text_column)

    def evaluation_precision(self, requested: str | None = None, n_items: int | None = None) -> str:
        """The one precision evaluation computes in, resolved for this device ("fp32", "bf16"; never "auto"):
        `requested` (auto, fp32, bf16), else the precision the model's metrics were measured at (fp32 for models
        that do not record it); `auto` as inference resolves it for `n_items` items (default: a full batch).
        fit's test metrics, `evaluate`, `report` and the server's /metadata all state it."""
        return batch_precision(requested or self.manifest.evaluation_precision or EVALUATION_PRECISION, self.modality,
                               n_items or get_modality(self.modality).default_batch_size)

    def evaluate(self, data: Dataset | str | Path, text_column: str | None = None,
                 label_column: str | None = None, strict: bool = False, precision: str | None = None
                 ) -> dict[str, Any]:
        """Metrics on labeled data the model has not been fitted on (see `evaluation_data`), at
        `evaluation_precision(precision)`; `evaluated_on` in the result says which items they are."""
        return self.evaluation(data, text_column, label_column, strict, precision).metrics

    def evaluation(self, data: Dataset | str | Path | None, text_column: str | None = None,
                   label_column: str | None = None, strict: bool = False, precision: str | None = None) -> Evaluation:
        """Like `evaluate`, with the items scored and their probabilities (what `report` draws)."""
        dataset, where, left_out = self.evaluation_data(data, text_column, label_column)
        result = evaluate_items(self.classifier, dataset, self.evaluation_precision(precision, len(dataset)), strict,
                                inference_model=self._inference_model(), where=where)
        result.metrics["fitted_items_left_out"] = left_out
        log.info("evaluated on %s: %d items, %s", where, result.metrics["n"], result.metrics["evaluation_precision"])
        return result

    def evaluation_data(self, data: Dataset | str | Path | None, text_column: str | None = None,
                        label_column: str | None = None) -> tuple[Dataset, str, int]:
        """The labeled items to evaluate on, a phrase saying which they are, and how many were left out as items
        the model was fitted on. Never a training-set score:

        - `data` None, or the source the model was fitted on (the same built-in name or resolved path): the
          recorded test split, rebuilt as `fit` drew it ("the recorded test split of SOURCE");
        - other data (a path, a built-in, a Dataset): their test split if they define one, else all of them, less
          every item (by content) the model was trained or calibrated on, with a warning that counts them; all of
          them seen is an error. Models saved before this record (no items.safetensors) cannot check that.
        """
        from .data.sources import load_data

        recorded = data is None or self._is_recorded_source(data)
        if recorded:
            test = self.recorded_splits(data).test
            given_apart = self.manifest.data.test_source
            where = (f"the recorded test data {given_apart}" if given_apart is not None else
                     f"the recorded test split of {data if data is not None else self.manifest.data.source}")
        elif isinstance(data, Dataset):
            test, where = data, data.name
        else:
            splits = load_data(data, text_column, label_column, classes=self.classes, modality=self.modality,
                               task=self.task)
            named = str(data) if isinstance(data, (str, Path)) else splits.train.name  # never a DataFrame's repr
            test, where = (splits.test, f"{named} (its test split)") if splits.test is not None else (splits.train,
                                                                                                      named)
        ensure_same_modality(self.modality, test.modality, "this model", "the data are")
        if list(test.classes) != self.classes:
            raise DataError(f"the data's classes {test.classes} differ from the model's {self.classes}")
        if self.item_digests is None:
            if recorded and len(test) < (self.manifest.data.splits.get("test") or 0):
                log.warning("%s is smaller than the one fit tested on: the data changed since the model was fitted",
                            where)
            elif not recorded:
                log.warning("this model was saved without a record of its training items (by an older headstart), "
                            "so %s cannot be checked for them", where)
            return test, where, 0
        keys = ItemDigests.keys(self.modality, test.items)
        if recorded and not np.array_equal(np.unique(keys[keys != 0]), self.item_digests.test):
            log.warning("%s is not the one fit tested on (the data changed since the model was fitted): items it was "
                        "fitted on are left out", where)
        return self._without_seen_items(test, where, keys)

    def _is_recorded_source(self, data: Any) -> bool:
        """Whether `data` names the source the model was fitted on: the same built-in, or the same path."""
        from .data.builtins import BUILTINS

        record = self.manifest.data
        if record is None or not isinstance(data, (str, Path)):  # a Dataset, a DataFrame, (items, labels)
            return False
        given, recorded = str(data), record.source
        if given == recorded:
            return True
        if given in BUILTINS or recorded in BUILTINS:
            return False
        return Path(given).expanduser().resolve() == Path(recorded).expanduser().resolve()

    def _without_seen_items(self, data: Dataset, where: str, keys: np.ndarray) -> tuple[Dataset, str, int]:
        """`data` less the items (by content `keys`) the model was trained or calibrated on, with a counted
        warning; nothing left is an error."""
        seen = self.item_digests.seen(keys)
        count = int(seen.sum())
        if count and count == len(data):
            raise DataError(f"all {len(data)} items of {where} were used to fit this model (training or validation "
                            "split): a score on them says nothing about new data; evaluate on held-out data, or on "
                            "the data it was fitted on to score its recorded test split")
        if count:
            log.warning("%s: %d of %d items were used to fit this model (training or validation split, same "
                        "content) and are left out of the evaluation", where, count, len(data))
            data = data.subset(np.flatnonzero(~seen))
        return data, where, count

    @property
    def temperature(self) -> float:
        """The head's temperature (1: not calibrated)."""
        return float(self.classifier.head.config["temperature"])

    def calibrate(self, data: Dataset) -> dict[str, Any]:
        """Tune what the task tunes (the temperature; per-label temperatures and thresholds; conformal intervals)
        on labeled held-out data (not the test set) and record it in the manifest; `save` to keep it; a
        temperature is kept only when it passes cross-validated acceptance on `data` (see
        `ClassificationHead.calibrate`). Returns the calibration record."""
        embeddings, failures = compute_embeddings(self.backbone, data.items, desc="calibrating",
                                                  model=self._inference_model())
        keep = drop_failures(data, failures, strict=False)
        record = self.classifier.head.calibrate(embeddings[keep], np.asarray(data.labels)[keep])
        head = self.classifier.head.config
        self.manifest = self.manifest.model_copy(update={
            "head": self.manifest.head.model_copy(update={"temperature": head["temperature"],
                                                          "task_params": head["task_params"]}),
            "calibration": record})
        if self.item_digests is not None:  # calibrated on: never scored by `evaluate` as held out
            self.item_digests = self.item_digests.with_fitted(self.modality, data.items)
        return record


def load(path: str | Path, runtime: str = "torch", threads: int | None = None, precision: str | None = None) -> Any:
    """Load a saved model folder (RUN/model) to predict with, importing no training code.

    `runtime="torch"` gives the `TrainedModel`, predicting in `precision` (default: the precision its metrics were
    measured at, fp32, so exactly the labels behind them and the ONNX graph's; auto: bfloat16 where the device is
    fast at it, quicker for large image batches); `"onnx"`
    (`"onnx-int8"`) runs the exported RUN/model/model.onnx (model.int8.onnx) with ONNX Runtime, and `"openvino"`
    (`"openvino-int8"`) the same file with OpenVINO: an `OnnxClassifier` with the same
    `scores`/`predict_proba`/`predict` (`threads` limits their threads), in the graph's own precision. A
    deployment without torch calls `headstart.runtime.load` directly.
    """
    if runtime == "torch":
        return TrainedModel.load(path, precision=precision)
    if precision not in (None, "auto", "fp32"):
        raise SettingsError(f"precision {precision} applies to the torch runtime: an exported graph computes in its "
                            "own precision (fp32, or int8)")
    from .runtime import load_runtime

    return load_runtime(path, runtime, threads)
