"""The deletion test (Petsiuk et al. 2018, RISE): deleting the most attributed units of an input should lower the
predicted class's probability more than deleting as many random units. A sanity check that attributions point at
what the model uses, not at what looks plausible."""

from __future__ import annotations

import math

import numpy as np

from .base import Explainer, Explanation


def deletion_drops(explainer: Explainer, explanation: Explanation, fraction: float = 0.2, random_draws: int = 5,
                   seed: int = 0) -> tuple[float, float]:
    """(drop when the top `fraction` of units are deleted, mean drop over `random_draws` random deletions of as
    many units), as falls of the predicted class's probability."""
    n = explanation.attributions.size
    k = max(1, math.ceil(fraction * n))
    top = np.argsort(-explanation.attributions, kind="stable")[:k]
    rng = np.random.default_rng(seed)
    random = [explainer.probability_without(explanation, rng.choice(n, k, replace=False)) for _ in range(random_draws)]
    return (explanation.score - explainer.probability_without(explanation, top),
            explanation.score - float(np.mean(random)))


def deletion_check(explainer: Explainer, explanations: list[Explanation], fraction: float = 0.2,
                   random_draws: int = 5, seed: int = 0) -> dict:
    """The share of items whose top-attributed deletion lowers the probability more than random deletion."""
    drops = [deletion_drops(explainer, e, fraction, random_draws, seed + i) for i, e in enumerate(explanations)]
    top, random = np.array(drops).reshape(-1, 2).T
    return {"n": len(drops), "fraction": fraction, "random_draws": random_draws,
            "share_top_beats_random": float((top > random).mean()) if drops else float("nan"),
            "mean_drop_top": float(top.mean()) if drops else float("nan"),
            "mean_drop_random": float(random.mean()) if drops else float("nan")}
