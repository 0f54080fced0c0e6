"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T > 0 divides the
logits so that softmax(z / T) matches how often the model is right. T is fitted on held-out (validation) logits by
minimising their negative log-likelihood; it never changes the argmax, so accuracy is unchanged.

Hand-written because no maintained library offers temperature scaling for plain logits; it is one bounded 1-D
minimisation (SciPy's bounded Brent search over log T). The NLL is convex in 1/T, so the minimum in the bounds is
the global one.
"""

from __future__ import annotations

import numpy as np
import torch

T_MIN, T_MAX = 0.05, 20.0
# Below this many validation items one temperature is fitted to noise: a handful of items that are all right
# drive T to T_MIN (on four validation tones, T = 0.12: every probability near 0 or 1). Guo et al. calibrate on
# 5,000 items; 50 is where a 15-bin ECE starts to mean something.
MIN_CALIBRATION_ITEMS = 50


def why_not_calibrate(logits: np.ndarray, labels: np.ndarray) -> str | None:
    """Why a temperature fitted on these held-out logits could not be trusted, or None when it can be fitted."""
    if len(labels) < MIN_CALIBRATION_ITEMS:
        return f"{len(labels)} validation items are too few (at least {MIN_CALIBRATION_ITEMS})"
    if (np.asarray(logits).argmax(1) == np.asarray(labels)).all():
        return "the validation split has no mistakes, so the fitted temperature would sharpen every score"
    return None


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [T_MIN, T_MAX] minimising the mean NLL of `logits` (items x classes) for `labels`."""
    from scipy.optimize import minimize_scalar

    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / float(np.exp(log_t)), y))

    with torch.no_grad():
        result = minimize_scalar(nll, bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded",
                                 options={"xatol": 1e-4})
    return float(np.exp(result.x))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling, from the calibrated ones: softmax(T * log p) = softmax(z),
    because log p = z / T minus a per-row constant that softmax ignores. Hand-written because it lets every
    runtime (PyTorch, ONNX, a server) report both without keeping logits."""
    if temperature == 1.0:
        return np.asarray(probs)
    return softmax(temperature * np.log(np.clip(np.asarray(probs, np.float64), 1e-300, None)))
