"""Bootstrap confidence intervals of held-out metrics: how far a figure could move with another test set of the
same size. SciPy's `bootstrap` (percentile method) over item indices, so that one resample serves every metric."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import f1_score

from .metrics import brier_score, expected_calibration_error, negative_log_likelihood

METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda p, y: float((p.argmax(1) == y).mean()),
    "macro_f1": lambda p, y: float(f1_score(y, p.argmax(1), labels=list(range(p.shape[1])), average="macro",
                                            zero_division=0)),
    "ece": expected_calibration_error,
    "nll": negative_log_likelihood,
    "brier": brier_score,
}


def confidence_intervals(probs: np.ndarray, labels: np.ndarray, level: float = 0.95, resamples: int = 500,
                         seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """metric -> (value, low, high) for the metrics in METRICS."""
    from scipy.stats import bootstrap

    labels = np.asarray(labels)
    out = {}
    for name, metric in METRICS.items():
        value = metric(probs, labels)
        if len(labels) < 2:
            out[name] = (value, value, value)
            continue
        result = bootstrap((np.arange(len(labels)),), lambda idx, m=metric: m(probs[idx], labels[idx]),
                           vectorized=False, n_resamples=resamples, confidence_level=level, method="percentile",
                           random_state=np.random.default_rng(seed))
        out[name] = (value, float(result.confidence_interval.low), float(result.confidence_interval.high))
    return out
