"""Held-out metrics of a regression: MAE, RMSE, R², Pearson and Spearman per target, and the empirical coverage
and mean width of the prediction intervals (scikit-learn and SciPy compute each of them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

HEADLINE = ("mae", "rmse", "r2", "pearson", "spearman")


def _correlation(kind: str, y: np.ndarray, p: np.ndarray) -> float | None:
    """Pearson or Spearman r; None when either side is constant (undefined)."""
    from scipy.stats import pearsonr, spearmanr

    if np.ptp(y) == 0 or np.ptp(p) == 0:
        return None
    return float((pearsonr if kind == "pearson" else spearmanr)(y, p)[0])


def target_metrics(y: np.ndarray, p: np.ndarray, half_width: float | None) -> dict[str, Any]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    result: dict[str, Any] = {
        "mae": float(mean_absolute_error(y, p)), "rmse": float(np.sqrt(mean_squared_error(y, p))),
        "r2": float(r2_score(y, p)) if len(y) > 1 else None,
        "pearson": _correlation("pearson", y, p), "spearman": _correlation("spearman", y, p)}
    if half_width is not None:
        result |= {"interval_coverage": float((np.abs(y - p) <= half_width).mean()),
                   "interval_width": float(2 * half_width)}
    return result


def regression_metrics(targets: np.ndarray, predictions: np.ndarray, names: Sequence[str],
                       half_widths: Sequence[float] | None, coverage: float | None) -> dict[str, Any]:
    """Per target in `per_target`; the top-level keys are their means over targets (the target's own values for
    one target). `half_widths`: the conformal intervals' half widths (None: no intervals)."""
    per_target = {name: target_metrics(targets[:, j], predictions[:, j],
                                       None if half_widths is None else float(half_widths[j]))
                  for j, name in enumerate(names)}

    def mean(key: str) -> float | None:
        values = [m[key] for m in per_target.values() if m.get(key) is not None]
        return float(np.mean(values)) if values else None

    keys = HEADLINE + (("interval_coverage", "interval_width") if half_widths is not None else ())
    return {**{k: mean(k) for k in keys}, "n": len(targets), "targets": list(names),
            **({"interval_target_coverage": coverage} if half_widths is not None else {}),
            "per_target": per_target}
