"""A trained classifier: predict, predict_proba, evaluate, save and load, the same after loading as after training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ._util import default_device, library_versions
from .artifact import MANIFEST, METRICS, read_model_dir, write_model_dir
from .data.dataset import Dataset, Splits
from .embeddings import compute_embeddings
from .errors import DataError, HeadstartError
from .heads import Classifier
from .manifests import ModelManifest
from .modalities import ensure_same_modality, get_modality


def model_folder(path: str | Path) -> Path:
    """The model folder a user means: `path` itself, or RUN/model when `path` is a run folder."""
    path = Path(path).expanduser()
    if not (path / MANIFEST).exists() and (path / "model" / MANIFEST).exists():
        return path / "model"
    return path


class TrainedModel:
    """Backbone + head + class names + the manifest describing how it was made.

    The first prediction makes an inference-ready copy of the backbone (eval mode, channels_last, BatchNorm
    folded into convolutions) and later predictions reuse it. Change the weights after that and call
    `reset_inference()`.
    """

    def __init__(self, classifier: Classifier, classes: Sequence[str], manifest: ModelManifest):
        self.classifier = classifier.eval()
        self.classes = list(classes)
        self.manifest = manifest
        self.run_dir: Path | None = None
        self._inference: nn.Module | None = None

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> TrainedModel:
        """Rebuild a saved model folder (RUN/model, or the run folder RUN) with no network and no pickle."""
        classifier, manifest = read_model_dir(model_folder(path), device)
        return cls(classifier, manifest.classes, manifest)

    def recorded_splits(self, data: str | Path | Dataset | Splits | None = None) -> Splits:
        """The train/val/test splits this model was fitted with, rebuilt from its manifest (or from `data`, when
        given, split the same way; test data given apart at fit, `--test`, are read again from where the manifest
        records them unless `data` defines its own test split). A source that is gone is an error that says to
        pass the data."""
        from .data import load_data, make_splits, read_test_data

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
                                modality=self.modality)
        except DataError as e:
            raise DataError(f"cannot read the data the model was fitted on ({e}): pass --data PATH") from None
        options = self.split_options()
        if record is not None and record.test_source is not None and not (data is not None and raw.test is not None):
            try:
                test = read_test_data(record.test_source, self.classes, self.modality, options["text_column"],
                                      options["label_column"])
            except DataError as e:
                raise DataError(f"cannot read the test data the model was tested on ({e}): pass --data with them in "
                                "a test/ folder (or test table) beside train/") from None
            raw = Splits(raw.train, raw.val, test)
        return make_splits(raw, options["val_size"], options["test_size"], options["labels_per_class"], options["seed"])

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
        metrics, so that they can never belong to another model)."""
        import json
        from datetime import datetime, timezone

        self.manifest = self.manifest.model_copy(update={
            "versions": library_versions(), "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        report = {**self.metrics, "timings": self.manifest.timings, "backbone": self.manifest.backbone_name,
                  "strategy": self.manifest.strategy.name}
        try:
            write_model_dir(Path(path), self.classifier, self.manifest,
                            {METRICS: (json.dumps(report, indent=2, default=str) + "\n").encode()})
        except OSError as e:  # a full disk, a folder made read-only meanwhile: the previous model is untouched
            raise HeadstartError(f"cannot save the model to {path} ({e.strerror or type(e).__name__}); any previous "
                                 "model there is unchanged: free space or choose another --out") from None
        return Path(path)

    @property
    def backbone(self):
        return self.classifier.backbone

    @property
    def modality(self) -> str:
        return self.backbone.modality

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.metrics

    def __repr__(self) -> str:
        return (f"TrainedModel(backbone={self.manifest.backbone_name!r}, strategy={self.manifest.strategy.name!r}, "
                f"classes={len(self.classes)})")

    def reset_inference(self) -> None:
        self._inference = None

    def _inference_model(self) -> nn.Module:
        if self._inference is None:
            self._inference = self.backbone.inference_copy(default_device(), fold=True)
        return self._inference

    def scores(self, items: Sequence, precision: str = "auto", batch_size: int | None = None
               ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Class probabilities per item (NaN rows for unreadable items) and the (index, reason) failures.
        `batch_size`: items per model call (default: the modality's)."""
        if len(items) == 0:
            return np.zeros((0, len(self.classes)), np.float32), []
        embeddings, failures = compute_embeddings(self.backbone, items, batch_size=batch_size, precision=precision,
                                                  desc="predicting", model=self._inference_model())
        probs = self.classifier.head.probabilities(embeddings)
        for i, _ in failures:
            probs[i] = np.nan
        return probs, failures

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

    def predict(self, items: Any, *, text_column: str | None = None, batch_size: int | None = None) -> list[str]:
        """The most probable class of each item (items as `predict_proba` takes them)."""
        probs = self.predict_proba(items, text_column=text_column, batch_size=batch_size)
        return [self.classes[i] for i in probs.argmax(1)]

    def _prediction_items(self, items: Any, text_column: str | None) -> tuple[Sequence, Any]:
        """A Series or DataFrame as a list of items and its index (None for a list)."""
        from .data.frames import prediction_items

        recorded = self.manifest.data.text_column if self.manifest.data is not None else None
        if text_column is None and recorded in getattr(items, "columns", ()):  # the column the model was fitted on
            text_column = recorded
        return prediction_items(items, self.modality, text_column)

    def evaluate(self, data: Dataset | str | Path, text_column: str | None = None,
                 label_column: str | None = None, strict: bool = False) -> dict[str, Any]:
        """Metrics on labeled data: a Dataset, or a path/built-in (its test split if it defines one, else all)."""
        from .data.sources import load_data
        from .embeddings import drop_failures
        from .evaluation.metrics import classification_metrics

        if not isinstance(data, Dataset):
            splits = load_data(data, text_column, label_column, classes=self.classes, modality=self.modality)
            data = splits.test or splits.train
        ensure_same_modality(self.modality, data.modality, "this model", "the data are")
        if list(data.classes) != self.classes:
            raise DataError(f"the data's classes {data.classes} differ from the model's {self.classes}")
        probs, failures = self.scores(data.items)
        keep = drop_failures(data, failures, strict)
        if len(keep) == 0:
            raise DataError(f"{data.name}: none of its {len(data)} items could be read, so there is nothing to evaluate")
        if len(keep) < len(data):
            probs, data = probs[keep], data.subset(keep)
        metrics = classification_metrics(data.labels, probs, self.classes, self.temperature)
        metrics["skipped"] = len(failures)
        return metrics

    @property
    def temperature(self) -> float:
        """The head's temperature (1: not calibrated)."""
        return float(self.classifier.head.config["temperature"])

    def calibrate(self, data: Dataset) -> dict[str, Any]:
        """Fit the temperature on labeled held-out data (not the test set) and record it in the manifest; `save`
        to keep it; the temperature is kept only when it passes cross-validated acceptance on `data` (see
        `ClassificationHead.calibrate`). Returns the calibration record (temperature, NLL and ECE before and after)."""
        from .embeddings import drop_failures

        embeddings, failures = compute_embeddings(self.backbone, data.items, desc="calibrating",
                                                  model=self._inference_model())
        keep = drop_failures(data, failures, strict=False)
        record = self.classifier.head.calibrate(embeddings[keep], np.asarray(data.labels)[keep])
        self.manifest = self.manifest.model_copy(update={
            "head": self.manifest.head.model_copy(update={"temperature": record["temperature"]}),
            "calibration": record})
        return record
