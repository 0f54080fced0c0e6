"""A trained classifier: predict, predict_proba, evaluate and save, the same after loading as after training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.dataset import Dataset
from .embeddings import compute_embeddings, failure_summary
from .errors import DataError
from .heads import Classifier
from .strategies.probe import head_probabilities


class TrainedModel:
    """Backbone + head + class names + the manifest describing how it was made."""

    def __init__(self, classifier: Classifier, classes: Sequence[str], manifest: dict[str, Any]):
        self.classifier = classifier.eval()
        self.classes = list(classes)
        self.manifest = manifest

    @property
    def backbone(self):
        return self.classifier.backbone

    @property
    def modality(self) -> str:
        return self.backbone.modality

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    def __repr__(self) -> str:
        return (f"TrainedModel(backbone={self.manifest.get('backbone_name')!r}, strategy={self.manifest.get('strategy')!r}, "
                f"classes={len(self.classes)})")

    def scores(self, items: Sequence, precision: str = "auto") -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Class probabilities per item (NaN rows for unreadable items) and the (index, reason) failures."""
        if len(items) == 0:
            return np.zeros((0, len(self.classes)), np.float32), []
        embeddings, failures = compute_embeddings(self.backbone, items, precision=precision, desc="predicting")
        probs = head_probabilities(self.classifier.head, embeddings)
        for i, _ in failures:
            probs[i] = np.nan
        return probs, failures

    def predict_proba(self, items: Sequence) -> np.ndarray:
        """Probabilities (items x classes). Items: image paths/arrays or strings, as the backbone expects."""
        probs, failures = self.scores(items)
        if failures:
            raise DataError(failure_summary(items, failures))
        return probs

    def predict(self, items: Sequence) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(items).argmax(1)]

    def evaluate(self, data: Dataset | str | Path, text_column: str | None = None,
                 label_column: str | None = None, strict: bool = False) -> dict[str, Any]:
        """Metrics on labeled data: a Dataset, or a path/built-in (its test split if it defines one, else all)."""
        from .data.sources import load_data
        from .evaluation.metrics import classification_metrics

        if not isinstance(data, Dataset):
            splits = load_data(data, text_column, label_column, classes=self.classes)
            data = splits.test or splits.train
        if data.modality != self.modality:
            raise DataError(f"this model takes {self.modality} inputs, but the data are {data.modality}")
        if list(data.classes) != self.classes:
            raise DataError(f"the data's classes {data.classes} differ from the model's {self.classes}")
        probs, failures = self.scores(data.items)
        if failures:
            if strict:
                raise DataError(failure_summary(data.items, failures))
            keep = np.setdiff1d(np.arange(len(data)), [i for i, _ in failures])
            probs, data = probs[keep], data.subset(keep)
        metrics = classification_metrics(data.labels, probs, self.classes)
        metrics["skipped"] = len(failures)
        return metrics

    def save(self, path: str | Path) -> Path:
        from .artifact import save_model

        return save_model(self, Path(path))
