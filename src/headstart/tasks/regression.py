"""`regression`: one or several numeric targets per item (a rating, an intensity score).

The targets are standardised with the training split's mean and standard deviation for training (so one learning
rate and one loss scale fit every target) and restored on output: the head's outputs are in the targets' own
units everywhere (predict, the server, the ONNX graph). The loss is the mean squared error, or Huber's (robust to
a few wild labels) with `regression_loss="huber"`.

Prediction intervals by split conformal prediction (Vovk et al. 2005; Lei et al. 2018, "Distribution-Free
Predictive Inference for Regression"): on the validation split, the ⌈(n+1)·c⌉-th smallest absolute residual of
each target is the half width q of an interval ŷ ± q that covers a new item's true value with probability at least
c (exchangeable data). Hand-written because it is one quantile per target; the libraries that offer it (MAPIE)
wrap scikit-learn estimators, not a trained network's outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError, SettingsError
from .base import Cells, Task, register_task

LOSSES = ("mse", "huber")


@register_task
@dataclass
class Regression(Task):
    """Settings: `target`, the numeric columns to predict (None: the label column found by name);
    `regression_loss` (mse, huber); `coverage`, the prediction intervals' target coverage."""

    name = "regression"
    noun = "target"
    headline = ("r2", "pearson", "mae", "rmse")
    val_metric = "val_r2"

    target: list[str] | None = None
    regression_loss: str = "mse"
    coverage: float = 0.9

    def __post_init__(self) -> None:
        if isinstance(self.target, str):
            self.target = [t.strip() for t in self.target.split(",") if t.strip()]
        if self.target is not None and (not self.target or len(set(self.target)) != len(self.target)):
            raise SettingsError(f"target (--target) must name one or more distinct columns, got {self.target!r}")
        if self.regression_loss not in LOSSES:
            raise SettingsError(f"regression_loss (--regression-loss) must be one of {', '.join(LOSSES)}, got "
                                f"{self.regression_loss!r}")
        if not isinstance(self.coverage, (int, float)) or not 0 < self.coverage < 1:
            raise SettingsError(f"coverage (--coverage) must be a fraction between 0 and 1, got {self.coverage!r}")

    def label_columns(self) -> list[str] | None:
        return self.target

    def encode(self, cells: Cells, where: Any, columns: Sequence[str], names: Sequence[str] | None
               ) -> tuple[np.ndarray, list[str]]:
        values = np.empty((len(cells), len(columns)), np.float32)
        for row, cell in enumerate(cells, 1):
            for j, text in enumerate(cell):
                try:
                    number = float(text)
                except ValueError:
                    number = math.nan
                if not math.isfinite(number):
                    raise DataError(f"{where}: row {row} of target column '{columns[j]}' is {text!r}, not a finite "
                                    "number: a regression target must be numeric (fix or drop the row)")
                values[row - 1, j] = number
        if names is None:
            constant = [c for j, c in enumerate(columns) if np.ptp(values[:, j]) == 0]
            if constant:
                raise DataError(f"{where}: target column '{constant[0]}' has one distinct value ({values[0, 0]:g}) "
                                "in every row: there is nothing to learn; choose a column that varies")
        elif list(names) != list(columns):
            raise DataError(f"{where}: the targets {list(columns)} differ from the model's {list(names)}")
        return values, list(columns)

    def as_labels(self, labels: Any, n_names: int | None = None) -> np.ndarray:
        array = np.asarray(labels, dtype=np.float32)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2 or (n_names is not None and array.shape[1] != n_names):
            raise ValueError(f"regression targets must be an items x targets array, got shape {array.shape}")
        return array

    def stratify(self, labels: np.ndarray) -> np.ndarray | None:
        """Quintiles of the first target, so that every split spans its range."""
        if len(labels) < 10:
            return None
        edges = np.quantile(labels[:, 0], [0.2, 0.4, 0.6, 0.8])
        groups = np.searchsorted(edges, labels[:, 0])
        _, counts = np.unique(groups, return_counts=True)
        return groups if counts.min() >= 2 else None

    def initial_params(self, labels: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
        scale = labels.std(0)
        return {"target_mean": [float(v) for v in labels.mean(0)],
                "target_scale": [float(v) if v > 0 else 1.0 for v in scale]}

    @staticmethod
    def _affine(params: dict[str, Any], like: Any) -> tuple[Any, Any]:
        import torch

        n = like.shape[-1]
        mean = torch.as_tensor(params.get("target_mean") or [0.0] * n, dtype=like.dtype, device=like.device)
        scale = torch.as_tensor(params.get("target_scale") or [1.0] * n, dtype=like.dtype, device=like.device)
        return mean, scale

    def scores(self, logits: Any, params: dict[str, Any]) -> Any:
        mean, scale = self._affine(params, logits)
        return logits * scale + mean

    def loss(self, logits: Any, targets: Any, params: dict[str, Any], weight: Any = None, smoothing: float = 0.0
             ) -> Any:
        import torch

        mean, scale = self._affine(params, logits)
        standardized = (targets.to(logits.dtype).reshape(logits.shape) - mean) / scale
        if self.regression_loss == "huber":
            return torch.nn.functional.huber_loss(logits, standardized)
        return torch.nn.functional.mse_loss(logits, standardized)

    def validation_score(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any]) -> float:
        from sklearn.metrics import r2_score

        predictions = self._restore(logits, params)
        return float(np.mean([r2_score(labels[:, j], predictions[:, j]) for j in range(labels.shape[1])]))

    @staticmethod
    def _restore(logits: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        n = logits.shape[1]
        return (np.asarray(logits, np.float64) * np.asarray(params.get("target_scale") or [1.0] * n)
                + np.asarray(params.get("target_mean") or [0.0] * n))

    def tune(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any], calibrate: bool, seed: int
             ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split conformal half widths on the validation split (always: they are the intervals, not a choice
        that calibration makes)."""
        residuals = np.abs(labels - self._restore(logits, params))
        n = len(residuals)
        rank = math.ceil((n + 1) * self.coverage)
        if rank > n:
            return ({**params, "interval_half_widths": None},
                    {"method": "none", "n": n, "reason": f"{n} validation items are too few for {self.coverage:.0%} "
                     f"intervals (at least {math.ceil(self.coverage / (1 - self.coverage))})"})
        half_widths = np.sort(residuals, axis=0)[rank - 1]
        return ({**params, "interval_half_widths": [float(q) for q in half_widths], "coverage": self.coverage},
                {"method": "split conformal", "n": n, "coverage": self.coverage,
                 "half_widths": [float(q) for q in half_widths],
                 "validation_coverage": [float(v) for v in (residuals <= half_widths).mean(0)]})

    def describe_tuning(self, record: dict[str, Any]) -> str:
        if record["method"] != "split conformal":
            return f"no prediction intervals: {record.get('reason')}"
        widths = ", ".join(f"±{q:.3g}" for q in record["half_widths"])
        return (f"prediction intervals ({record['coverage']:.0%}, split conformal on {record['n']} validation items): "
                f"{widths}")

    def metrics(self, labels: np.ndarray, scores: np.ndarray, names: Sequence[str], params: dict[str, Any]
                ) -> dict[str, Any]:
        from ..evaluation.regression_metrics import regression_metrics

        return regression_metrics(labels, np.asarray(scores, np.float64), names, params.get("interval_half_widths"),
                                  params.get("coverage"))

    def agreement(self, reference: np.ndarray, got: np.ndarray, names: Sequence[str], params: dict[str, Any]
                  ) -> float:
        """Values agree when within 1e-4 of the targets' scale (float32 rounding of the restored values)."""
        return float((np.abs(reference - got) <= 1e-4 * self.score_scale(params)).all(1).mean())

    def score_scale(self, params: dict[str, Any]) -> float:
        return max(1.0, *(params.get("target_scale") or [1.0]))

    def decide(self, scores: np.ndarray, names: Sequence[str], params: dict[str, Any]) -> list[Any]:
        return [{name: float(v) for name, v in zip(names, row)} for row in np.asarray(scores)]
