"""`classification`: one class per item, softmax over the classes, cross-entropy; temperature scaling on the
validation split; accuracy, macro-F1, per-class results, the confusion matrix and calibration as metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .base import Cells, Task, register_task

CONTINUOUS_DISTINCT = 20  # more distinct non-integer numbers than this: a measurement, not a set of classes
CONTINUOUS_MIN_DISTINCT = 10  # ... or at least this many, when they are most of the rows


def sorted_classes(values: Sequence[str]) -> list[str]:
    """Numeric-looking labels in numeric order (2 before 10), others alphabetically; never merged."""
    uniques = sorted(set(values))
    try:
        return sorted(uniques, key=lambda v: (float(v), v))
    except ValueError:
        return uniques


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def looks_continuous(labels: Sequence[str]) -> bool:
    """Whether labels look like a regression target: all numbers, some with a fraction, and many distinct ones
    (more than CONTINUOUS_DISTINCT, or at least CONTINUOUS_MIN_DISTINCT that are most of the rows).

    Hand-written because no library draws this line. Whole numbers never count: 0/1/2, star ratings or
    CIFAR-100's 100 class ids are classes, and "1.0" or "4.5" in a handful of values are class names too.
    """
    distinct = set(labels)
    if len(distinct) < CONTINUOUS_MIN_DISTINCT:
        return False
    numbers = [_number(v) for v in distinct]
    if any(n is None for n in numbers) or all(float(n).is_integer() for n in numbers):
        return False
    return len(distinct) > CONTINUOUS_DISTINCT or len(distinct) > len(labels) / 2


def refuse_continuous_labels(labels: Sequence[str], where: Any, column: str) -> None:
    """A one-line DataError when the label column holds continuous numbers: trained as classes, each value is a
    class of one or two rows, and training fails later with a message about empty classes that misleads. The
    task is never switched silently: the error says how to ask for a regression."""
    if not looks_continuous(labels):
        return
    distinct = list(dict.fromkeys(labels))  # in the order of the file
    numbers = [float(v) for v in distinct]
    raise DataError(
        f"{where}: label column '{column}' holds {len(distinct)} distinct numbers (e.g. {', '.join(distinct[:3])}, "
        f"...; from {min(numbers):g} to {max(numbers):g}): it looks like a regression target, so fit it as one "
        f"with --task regression --target {column} (Python: task='regression', target='{column}'), or name the "
        "column of class labels with --label-column")


@register_task
@dataclass
class Classification(Task):
    """One class per item (the default task)."""

    name = "classification"
    noun = "class"
    headline = ("accuracy", "macro_f1")
    val_metric = "val_accuracy"
    one_class_per_item = True

    def encode(self, cells: Cells, where: Any, columns: Sequence[str], names: Sequence[str] | None
               ) -> tuple[np.ndarray, list[str]]:
        values = [row[0] for row in cells]
        if names is None:
            refuse_continuous_labels(values, where, columns[0])
            names = sorted_classes(values)
            if len(names) < 2:
                raise DataError(f"{where} column '{columns[0]}' has only one class ({names[0]}): a classifier needs "
                                "at least two")
        index = {c: i for i, c in enumerate(names)}
        unknown = sorted(set(values) - set(index))
        if unknown:
            raise DataError(f"{where} has labels not seen in training: {', '.join(unknown[:10])}")
        return np.array([index[v] for v in values], dtype=np.int64), list(names)

    def as_labels(self, labels: Any, n_names: int | None = None) -> np.ndarray:
        return np.asarray(labels, dtype=np.int64).reshape(-1)

    def stratify(self, labels: np.ndarray) -> np.ndarray | None:
        return labels

    def counts(self, labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
        return {c: int(n) for c, n in zip(names, np.bincount(labels, minlength=len(names)))}

    def check_trainable(self, labels: np.ndarray, names: Sequence[str], where: str) -> None:
        empty = [c for c, n in self.counts(labels, names).items() if n == 0]
        if empty:
            raise DataError(f"class(es) {', '.join(empty)} have no usable training examples: add readable files")

    def scores(self, logits: Any, params: dict[str, Any]) -> Any:
        import torch

        return torch.softmax(logits / float(params.get("temperature", 1.0)), dim=-1)

    def loss(self, logits: Any, targets: Any, params: dict[str, Any], weight: Any = None, smoothing: float = 0.0
             ) -> Any:
        import torch

        return torch.nn.functional.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)

    def validation_score(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any]) -> float:
        return float((np.asarray(logits).argmax(1) == labels).mean())

    def training_weights(self, labels: np.ndarray, names: Sequence[str], choice: str) -> tuple[Any, dict[str, Any]]:
        from .class_weights import class_weights

        return class_weights(labels, len(names), choice)

    def tune(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any], calibrate: bool, seed: int
             ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Temperature scaling (`evaluation.calibration`), kept only when cross-validation shows it helps."""
        from ..evaluation.calibration import choose_temperature, softmax, why_not_calibrate
        from ..evaluation.metrics import expected_calibration_error, negative_log_likelihood

        if not calibrate:
            return {**params, "temperature": 1.0}, None
        before = softmax(logits)
        reason = why_not_calibrate(logits, labels)
        acceptance, temperature = None, 1.0
        if reason is None:
            choice = choose_temperature(logits, labels, seed=seed)
            reason, acceptance, temperature = choice.reason, choice.record(), choice.temperature
        after = softmax(logits / temperature)
        record = {"method": "temperature" if reason is None else "none", "temperature": temperature,
                  "n": len(labels), **({"reason": reason} if reason else {}),
                  **({"acceptance": acceptance} if acceptance else {}),
                  "nll_before": negative_log_likelihood(before, labels),
                  "nll_after": negative_log_likelihood(after, labels),
                  "ece_before": expected_calibration_error(before, labels),
                  "ece_after": expected_calibration_error(after, labels)}
        return {**params, "temperature": temperature}, record

    def describe_tuning(self, record: dict[str, Any]) -> str:
        if "acceptance" not in record:
            return super().describe_tuning(record)
        check = record["acceptance"]
        return (f"calibrated on {record['n']} validation items: temperature {record['temperature']:.3f} (held-out "
                f"NLL gain {check['nll_gain']:.4f} ± {check['nll_gain_se']:.4f} per item, {check['folds']}-fold "
                f"cross-validation), ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f}")

    def metrics(self, labels: np.ndarray, scores: np.ndarray, names: Sequence[str], params: dict[str, Any]
                ) -> dict[str, Any]:
        from ..evaluation.metrics import classification_metrics

        return classification_metrics(labels, scores, names, float(params.get("temperature", 1.0)))

    def decide(self, scores: np.ndarray, names: Sequence[str], params: dict[str, Any]) -> list[Any]:
        return [names[i] for i in np.asarray(scores).argmax(1)]
