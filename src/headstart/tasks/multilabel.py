"""`multilabel`: any number of labels per item (an image with "sea" and "sunset"), one sigmoid per label and
binary cross-entropy, so labels never seen together in training can still be predicted together.

After training, on the validation split: a temperature per label (temperature scaling, Guo et al. 2017, applied
to each label's logit: Platt scaling without the bias, which keeps each label's ranking), kept only for labels
where cross-validation shows it lowers held-out log loss beyond noise; then a decision threshold per label chosen
to maximise that label's F1 (the per-label threshold tuning of Fan & Lin 2007, "A Study on Threshold Selection for
Multi-label Classification"), with 0.5 kept for labels with too few validation positives to tune on. Both are
stored in the head's task parameters and used by predict, evaluate, the server and the ONNX sidecar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError, SettingsError
from .base import Cells, Task, register_task

# A label needs this many validation positives for its threshold to be tuned (fewer: 0.5, the Bayes threshold of
# a calibrated probability): with one or two positives the best-F1 threshold fits those items, not the label.
MIN_POSITIVES_TO_TUNE = 5
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)
TEMPERATURE_GRID = np.exp(np.linspace(np.log(0.25), np.log(4.0), 41))
CV_FOLDS = 5


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def item_log_loss(logits: np.ndarray, labels: np.ndarray, temperature: np.ndarray | float) -> np.ndarray:
    """Per item and label, the binary log loss of sigmoid(z / T) (stable form)."""
    z = np.asarray(logits, np.float64) / temperature
    return np.logaddexp(0, z) - labels * z


@register_task
@dataclass
class MultiLabel(Task):
    """Settings: `label_separator` joins the labels of one item in a label cell ("sea|sunset")."""

    name = "multilabel"
    noun = "label"
    headline = ("macro_f1", "micro_f1", "map")
    val_metric = "val_map"

    label_separator: str = "|"

    def __post_init__(self) -> None:
        separator = self.label_separator
        if not isinstance(separator, str) or not separator or separator.strip() != separator:
            raise SettingsError(f"label_separator (--label-separator) must be a non-empty string without spaces "
                                f"around it, got {self.label_separator!r}")

    def encode(self, cells: Cells, where: Any, columns: Sequence[str], names: Sequence[str] | None
               ) -> tuple[np.ndarray, list[str]]:
        column = columns[0]
        sets = []
        for row, cell in enumerate(cells, 1):
            labels = [v.strip() for v in cell[0].split(self.label_separator)]
            if any(not v for v in labels):
                raise DataError(f"{where}: row {row} of label column '{column}' has an empty label ({cell[0]!r}): "
                                f"write the labels joined by '{self.label_separator}' with none empty")
            sets.append(labels)
        if names is None:
            if not any(len(s) > 1 for s in sets):
                raise DataError(f"{where}: no label cell of column '{column}' holds the separator "
                                f"'{self.label_separator}', so every item has one label: give the separator the data "
                                "use with --label-separator (or fit with --task classification)")
            names = sorted({v for s in sets for v in s})
        index = {c: i for i, c in enumerate(names)}
        unknown = sorted({v for s in sets for v in s} - set(index))
        if unknown:
            raise DataError(f"{where} has labels not seen in training: {', '.join(unknown[:10])}")
        encoded = np.zeros((len(sets), len(names)), np.float32)
        for i, s in enumerate(sets):
            encoded[i, [index[v] for v in s]] = 1
        return encoded, list(names)

    def as_labels(self, labels: Any, n_names: int | None = None) -> np.ndarray:
        array = np.asarray(labels, dtype=np.float32)
        if array.ndim != 2 or (n_names is not None and array.shape[1] != n_names) or not np.isin(array, (0, 1)).all():
            raise ValueError(f"multi-label labels must be an items x labels array of 0 and 1, got shape {array.shape}")
        return array

    def stratify(self, labels: np.ndarray) -> np.ndarray | None:
        """Each item's rarest label (-1 for none), so that rare labels reach every split; hand-written because
        scikit-learn has no multi-label stratification (iterative stratification lives in scikit-multilearn,
        an unmaintained dependency for this one use)."""
        frequency = labels.sum(0)
        rarity = np.where(labels > 0, frequency[None, :], np.inf)
        groups = np.where(labels.any(1), rarity.argmin(1), -1)
        _, counts = np.unique(groups, return_counts=True)
        return groups if counts.min() >= 2 else None

    def counts(self, labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
        return {c: int(n) for c, n in zip(names, labels.sum(0))}

    def check_trainable(self, labels: np.ndarray, names: Sequence[str], where: str) -> None:
        empty = [c for c, n in self.counts(labels, names).items() if n == 0]
        if empty:
            raise DataError(f"label(s) {', '.join(empty)} occur on no usable training item: add examples of them or "
                            "drop them from the data")

    def scores(self, logits: Any, params: dict[str, Any]) -> Any:
        import torch

        temperatures = params.get("temperatures")
        if temperatures is not None:
            logits = logits / torch.as_tensor(temperatures, dtype=logits.dtype)
        return torch.sigmoid(logits)

    def loss(self, logits: Any, targets: Any, params: dict[str, Any], weight: Any = None, smoothing: float = 0.0
             ) -> Any:
        import torch

        # No label smoothing: with rare labels it would move every negative's target to smoothing / 2, a sizeable
        # share of a rare label's positives, and bias its probabilities up.
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))

    def validation_score(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any]) -> float:
        from ..evaluation.multilabel_metrics import mean_average_precision

        return mean_average_precision(labels, np.asarray(logits))

    def tune(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any], calibrate: bool, seed: int
             ) -> tuple[dict[str, Any], dict[str, Any]]:
        temperatures, calibration = (self._temperatures(logits, labels, seed) if calibrate else
                                     (np.ones(labels.shape[1]), {"method": "none", "reason": "not asked (--no-calibrate)"}))
        probs = _sigmoid(logits / temperatures)
        thresholds, tuned = self._thresholds(probs, labels)
        record = {**calibration, "n": len(labels),
                  "thresholds": {"method": f"best F1 per label on the validation split (labels with at least "
                                           f"{MIN_POSITIVES_TO_TUNE} positives; 0.5 otherwise)",
                                 "tuned": int(tuned.sum()), "of": len(tuned)}}
        return ({**params, "temperatures": [round(float(t), 6) for t in temperatures],
                 "thresholds": [float(t) for t in thresholds]}, record)

    @staticmethod
    def _temperatures(logits: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Per label, the grid temperature of least log loss, kept where K-fold cross-validation shows a held-out
        gain over T = 1 larger than its standard error (the rule of `evaluation.calibration`, label by label), for
        labels with at least MIN_POSITIVES_TO_TUNE validation positives and negatives."""
        from sklearn.model_selection import KFold

        n, k = labels.shape
        if n < 50:
            return np.ones(k), {"method": "none", "reason": f"{n} validation items are too few (at least 50)"}

        def best(idx: np.ndarray) -> np.ndarray:  # per label, the grid temperature of least mean log loss on idx
            losses = np.stack([item_log_loss(logits[idx], labels[idx], t).mean(0) for t in TEMPERATURE_GRID])
            return TEMPERATURE_GRID[losses.argmin(0)]

        gains = np.empty((n, k))
        for fit_idx, held_idx in KFold(CV_FOLDS, shuffle=True, random_state=seed).split(logits):
            t = best(fit_idx)
            gains[held_idx] = item_log_loss(logits[held_idx], labels[held_idx], 1.0) - item_log_loss(
                logits[held_idx], labels[held_idx], t)
        gain, se = gains.mean(0), gains.std(0, ddof=1) / np.sqrt(n)
        # A label with few validation positives (or negatives) has a log loss that a sharper sigmoid lowers on
        # every item alike: the gain looks certain and says nothing about new items with the label.
        positives = labels.sum(0)
        enough = (positives >= MIN_POSITIVES_TO_TUNE) & (n - positives >= MIN_POSITIVES_TO_TUNE)
        keep = enough & (gain > se)
        fitted = best(np.arange(n))
        temperatures = np.where(keep, fitted, 1.0)
        record = {"method": "temperature per label" if keep.any() else "none", "kept": int(keep.sum()), "of": k,
                  "test": f"{CV_FOLDS}-fold cross-validated log-loss gain over T = 1, per label (kept when larger "
                          "than its standard error)",
                  "log_loss_before": float(item_log_loss(logits, labels, 1.0).mean()),
                  "log_loss_after": float(item_log_loss(logits, labels, temperatures).mean())}
        if not keep.any():
            record["reason"] = "no label's temperature improved held-out log loss beyond noise"
        return temperatures, record

    @staticmethod
    def _thresholds(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per label, the grid threshold of best F1 (the lowest of equal ones ... nearest 0.5), and which were tuned."""
        positives = labels.sum(0)
        tuned = positives >= MIN_POSITIVES_TO_TUNE
        thresholds = np.full(labels.shape[1], 0.5)
        for j in np.flatnonzero(tuned):
            predicted = probs[:, j][:, None] >= THRESHOLD_GRID[None, :]
            tp = (predicted & (labels[:, j][:, None] > 0)).sum(0)
            f1 = 2 * tp / (predicted.sum(0) + positives[j])
            best = np.flatnonzero(f1 == f1.max())
            thresholds[j] = THRESHOLD_GRID[best[np.abs(THRESHOLD_GRID[best] - 0.5).argmin()]]
        return thresholds, tuned

    def describe_tuning(self, record: dict[str, Any]) -> str:
        kept = (f"temperatures kept for {record['kept']} of {record['of']} labels" if "kept" in record else
                f"not calibrated ({record.get('reason')})")
        return (f"tuned on {record['n']} validation items: {kept}; thresholds tuned for "
                f"{record['thresholds']['tuned']} of {record['thresholds']['of']} labels (0.5 for the others)")

    def metrics(self, labels: np.ndarray, scores: np.ndarray, names: Sequence[str], params: dict[str, Any]
                ) -> dict[str, Any]:
        from ..evaluation.multilabel_metrics import multilabel_metrics

        return multilabel_metrics(labels, scores, names, self.thresholds(params, len(names)))

    @staticmethod
    def thresholds(params: dict[str, Any], n: int) -> np.ndarray:
        return np.asarray(params.get("thresholds") or [0.5] * n, np.float64)

    def decide(self, scores: np.ndarray, names: Sequence[str], params: dict[str, Any]) -> list[Any]:
        chosen = np.asarray(scores) >= self.thresholds(params, len(names))
        return [[names[j] for j in np.flatnonzero(row)] for row in chosen]
