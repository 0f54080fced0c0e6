"""LogME: how well fixed features explain labels, as the log marginal evidence of a Bayesian linear model.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning" (ICML 2021);
reference numpy file github.com/thuml/LogME (LogME.py). Re-implemented (no maintained package ships it):

- each class's one-hot column y is a regression target of y = F w + noise, with the prior w ~ N(0, I / alpha)
  and noise ~ N(0, 1 / beta); the score of a class is max over (alpha, beta) of log p(y | F, alpha, beta) / N,
  and LogME is the mean over classes. Higher is better; it is comparable across feature sizes and unchanged by
  scaling or rotating the features. Everything follows from one decomposition of F.

Departures from the paper's procedure, not from its definition:
- The paper maximises the evidence with MacKay's fixed-point updates (alpha = gamma / |m|^2, beta = (N - gamma)
  / |y - F m|^2), stopping after at most 11 steps. When the best prior is very strong (fewer items than feature
  dimensions, a class the features barely explain), those updates crawl: after 11 steps the evidence can be 0.02
  per item below its maximum, enough to swap close candidates. Hand-written here instead: for a fixed ratio
  t = alpha / beta the best beta has a closed form (N / y^T C^-1 y, C = F F^T / t + I), so the maximum is a
  one-dimensional search over log t: a grid, then Brent's method between the best grid point's neighbours.
- log|A| sums over all D directions (the D - k that carry no data, k = rank of F, contribute log alpha each), as
  in the paper's Algorithm 1; the reference's faster variant drops those terms, which overstates the evidence
  by (D - k)/2 log(alpha) when there are fewer items than dimensions, the usual case for a subsample.
"""

from __future__ import annotations

import numpy as np

GRID_POINTS = 96  # log t grid, refined by Brent's method around its best point
EPSILON = 1e-5  # keeps log(beta) finite when the features explain a class exactly (the reference's constant)


def spectrum(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sigma: the nonzero squared singular values of F, x: U^T y per target column, |y|^2 per column).

    From the eigendecomposition of the smaller Gram matrix (N x N or D x D), the cheapest exact route."""
    n, d = features.shape
    if n <= d:
        sigma, u = np.linalg.eigh(features @ features.T)
    else:
        sigma, v = np.linalg.eigh(features.T @ features)
        u = features @ v
    keep = sigma > 1e-10 * max(float(sigma.max()), 1e-300) if sigma.size else np.zeros(0, dtype=bool)
    sigma, u = sigma[keep], u[:, keep]
    if n > d:
        u = u / np.sqrt(sigma)
    return sigma, u.T @ targets, (targets**2).sum(axis=0)


def profile_evidence(log_t: np.ndarray, sigma: np.ndarray, x2: np.ndarray, y2: float, n: int) -> np.ndarray:
    """log p(y | F, alpha, beta) / N at alpha = t * beta with beta at its best for that t, for each log t.

    y ~ N(0, C / beta), C = F F^T / t + I, whose eigenvalues are 1 + sigma_i / t (and 1 on the rest), so
    y^T C^-1 y = sum x_i^2 / (1 + sigma_i / t) + (|y|^2 - sum x_i^2) and the best beta is N over that.
    """
    ratio = sigma[None, :] / np.exp(log_t)[:, None]  # sigma_i / t
    quadratic = (x2[None, :] / (1 + ratio)).sum(axis=1) + max(y2 - x2.sum(), 0.0) + EPSILON
    beta = n / quadratic
    return (-0.5 * np.log1p(ratio).sum(axis=1) + n / 2 * np.log(beta) - n / 2 - n / 2 * np.log(2 * np.pi)) / n


def class_evidence(sigma: np.ndarray, x2: np.ndarray, y2: float, n: int) -> float:
    """The maximised log evidence per item of one target column."""
    from scipy.optimize import minimize_scalar

    if not len(sigma):  # features without any direction (all zero): the labels are noise around zero
        return float(profile_evidence(np.zeros(1), np.zeros(1), np.zeros(1), y2, n)[0])
    low, high = np.log(sigma.min()) - 12, np.log(sigma.max()) + 12  # t far below / above every sigma_i
    grid = np.linspace(low, high, GRID_POINTS)
    values = profile_evidence(grid, sigma, x2, y2, n)
    best = int(np.argmax(values))
    bounds = (grid[max(best - 1, 0)], grid[min(best + 1, GRID_POINTS - 1)])
    found = minimize_scalar(lambda s: -profile_evidence(np.array([s]), sigma, x2, y2, n)[0], bounds=bounds,
                            method="bounded", options={"xatol": 1e-6})
    return float(max(values[best], -found.fun))


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME score of `features` (N x D) for integer class `labels` (N,): the mean over classes of the maximised
    log evidence per item. Typical values lie between about -1 (features unrelated to the labels) and 2; features
    that are all zero (a network whose activations died) get the score of features that explain nothing."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.ndim != 1 or len(f) != len(y) or len(f) < 2:
        raise ValueError(f"need N x D features and N labels with N >= 2, got {f.shape} and {y.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    classes = np.unique(y)
    targets = (y[:, None] == classes[None, :]).astype(np.float64)
    sigma, projections, y2 = spectrum(f, targets)
    return float(np.mean([class_evidence(sigma, projections[:, c] ** 2, y2[c], len(f))
                          for c in range(len(classes))]))
