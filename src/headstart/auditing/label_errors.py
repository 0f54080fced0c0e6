"""Likely label errors and overlapping classes by confident learning (Northcutt, Jiang and Chuang, JAIR 2021).

A logistic-regression probe on the embeddings gives each item out-of-fold class probabilities (the item was not in
the folds its probe was fitted on, so a wrong label cannot teach the probe to agree with it); `cleanlab` estimates
the joint distribution of given and true labels from them and finds the items whose given label is least likely,
ranked by self-confidence (the out-of-fold probability of the given label), each with the class the probe prefers.

Of those, an item whose given label the probe still rates at or above chance (1 / the number of classes) is
reported as *ambiguous*, not as a likely error. Confident learning counts an item as an issue once another class's
probability passes that class's threshold, which with a probe that is itself wrong on 15-25% of the true labels
includes many correct labels between two plausible classes (CIFAR-10 with lite0: 861 issues for 500 flipped labels,
precision 0.48). Measured on six data sets with 5, 10 and 20% of labels flipped (benchmarks/label_errors_sets.py,
RESULTS.md "Issue 24, third round"), the split raised precision in every case with more than two classes (at 10%:
CIFAR-10 lite0 0.45 -> 0.67, TREC-6 0.49 -> 0.64, Banking77 0.75 -> 0.98; CIFAR-10's acceptance set 0.49 -> 0.71)
for at most 0.06 of recall; with two classes it changes nothing (cleanlab only counts an item whose given label is
not the probe's first choice, which with two classes is below one half).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .similarity import one_thread

FOLDS = 5
# Inverse L2 strengths tried on standardised embeddings; the one with the best cross-validated log loss is used.
# Few items per dimension want strong regularisation (SST-2, 1,500 minilm embeddings: 0.003; benchmarks/
# audit_quality.py), many items less; a fixed value is wrong for one or the other.
PROBE_CS = (0.001, 0.003, 0.01, 0.1, 1.0)
# Out-of-fold probabilities are averaged over this many seeded fold splits: each item is then scored by three probes,
# which steadies the ranking near the cut. Measured against one split (RESULTS.md, "Issue 24, third round"): the
# likely errors' precision rose on five of six sets (CIFAR-10, SST-2 with minilm and mpnet, TREC-6, Banking77: +0.01
# to +0.04) and fell on the smallest (hymenoptera, 244 items: 0.77 -> 0.73), for three times the probe fits (seconds:
# the audit of 50,000 cached items stays within its minute).
REPEATS = 3
CHOOSE_C_ITEMS = 5_000  # the strength is chosen on at most this many items (seconds, not minutes, at 50,000)


@dataclass
class LabelFindings:
    """Confident learning's issues (indices into the audited items, least likely label first), the class each is
    likely to be and its given label's out-of-fold probability; the out-of-fold probabilities of every item, and
    class pairs that overlap (joint probability of confusing them, most first). An issue whose label is below
    chance is a likely error (`flagged`), the others are ambiguous."""

    classes_present: int  # the classes with items: chance is 1 / this
    issues: np.ndarray
    issue_suggested: np.ndarray
    issue_quality: np.ndarray
    probabilities: np.ndarray
    overlapping: list[dict]
    judged_by: str  # what gave the out-of-fold probabilities, for the audit's notes

    @property
    def below_chance(self) -> np.ndarray:
        """Per issue: is its given label's probability below chance (a likely error)."""
        return self.issue_quality < 1.0 / self.classes_present

    @property
    def flagged(self) -> np.ndarray:
        return self.issues[self.below_chance]

    @property
    def suggested(self) -> np.ndarray:
        """The class each flagged item is likely to be."""
        return self.issue_suggested[self.below_chance]

    @property
    def label_quality(self) -> np.ndarray:
        """Each flagged item's given label's out-of-fold probability."""
        return self.issue_quality[self.below_chance]

    @property
    def ambiguous(self) -> np.ndarray:
        return self.issues[~self.below_chance]

    @property
    def ambiguous_quality(self) -> np.ndarray:
        return self.issue_quality[~self.below_chance]


MAX_ITERATIONS = 300  # L-BFGS iterations per fit (the scikit-learn probe's max_iter before)
GRADIENT_TOLERANCE = 1e-4  # stop when no gradient component of the mean loss exceeds this (scikit-learn's tol)


def standardised(x: np.ndarray) -> np.ndarray:
    """Columns of `x` less their mean, over their standard deviation, as float32."""
    x = np.asarray(x, dtype=np.float32)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)


def fit_probe(x: Any, y: Any, n_classes: int, strength: float, start: tuple | None = None) -> tuple[Any, Any]:
    """Weights and bias of a multinomial logistic regression on float32 torch rows `x`, labels `y`: the minimum of
    mean cross-entropy + |W|^2 / (2 C n), scikit-learn's objective for C = `strength` (intercept not penalised), by
    full-batch L-BFGS; `start`: weights to start from (the fit of a neighbouring strength or fold).

    Hand-written because scikit-learn's lbfgs computes this loss in float64 on one core: at 40,000 x 384 and 10
    classes one fit took 11 CPU seconds (25 iterations), the strength search and 5 folds 91 CPU s of the audit of
    50,000 items (benchmarks/audit_speed.py); the same optimum in float32 torch takes a fraction of a second."""
    import torch

    n, d = x.shape
    weights = (start[0].clone() if start else torch.zeros(d, n_classes)).requires_grad_(True)
    bias = (start[1].clone() if start else torch.zeros(n_classes)).requires_grad_(True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=MAX_ITERATIONS, tolerance_grad=GRADIENT_TOLERANCE,
                                  tolerance_change=1e-9, history_size=10, line_search_fn="strong_wolfe")
    # Two classes: scikit-learn fits one weight vector w (= W1 - W2), and |w|^2 is twice the least |W|^2 of the
    # two softmax columns, so the same C means twice the penalty here (measured: without it C 0.001 here matched
    # scikit-learn's C 0.002 on SST-2, and the strength search chose differently).
    penalty = (2.0 if n_classes == 2 else 1.0) / (2.0 * strength * n)

    def loss() -> Any:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(x @ weights + bias, y) + penalty * (weights * weights).sum()
        value.backward()
        return value

    with torch.enable_grad(), one_thread():
        optimizer.step(loss)
    return weights.detach(), bias.detach()


def probe_probabilities(x: Any, fitted: tuple[Any, Any]) -> Any:
    """Class probabilities of rows `x` under a fitted probe (weights, bias)."""
    import torch

    with torch.inference_mode():
        return torch.softmax(x @ fitted[0] + fitted[1], dim=1)


def probe_strength(embeddings: np.ndarray, labels: np.ndarray, seed: int, folds: int) -> float:
    """The regularisation (C) of `PROBE_CS` whose probe has the lowest cross-validated log loss (stratified,
    seeded folds), chosen on a seeded subsample of at most `CHOOSE_C_ITEMS` items. Strengths are tried from the
    strongest regularisation up, each fold's fit starting from the previous strength's, until the loss turns up."""
    import torch
    from sklearn.model_selection import StratifiedKFold

    rows = np.arange(len(labels))
    if len(rows) > CHOOSE_C_ITEMS:
        sample = np.sort(np.random.default_rng(seed).choice(rows, CHOOSE_C_ITEMS, replace=False))
        if np.unique(labels[sample], return_counts=True)[1].min() >= 2:  # else a rare class: all items
            rows = sample
    x = torch.from_numpy(standardised(embeddings[rows]))
    y = torch.from_numpy(np.searchsorted(np.unique(labels[rows]), labels[rows]).astype(np.int64))
    n_classes = int(y.max()) + 1
    _, counts = np.unique(labels[rows], return_counts=True)
    splits = list(StratifiedKFold(int(min(folds, counts.min())), shuffle=True, random_state=seed)
                  .split(np.zeros(len(rows)), y.numpy()))
    losses, fitted = {}, [None] * len(splits)
    for strength in sorted(PROBE_CS):
        total = 0.0
        for f, (train, held) in enumerate(splits):
            train, held = torch.from_numpy(train), torch.from_numpy(held)
            fitted[f] = fit_probe(x[train], y[train], n_classes, strength, fitted[f])
            probs = probe_probabilities(x[held], fitted[f]).clamp_min(1e-15)
            total += float(-probs[torch.arange(len(held)), y[held]].log().mean())
        losses[strength] = total / len(splits)
        if len(losses) > 1 and losses[strength] > min(losses.values()):
            break  # the loss has turned up: weaker regularisation only overfits more (and fits slowest)
    return min(sorted(losses), key=lambda c: losses[c])  # ties: the stronger regularisation


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, seed: int,
                              folds: int = FOLDS, repeats: int = REPEATS) -> tuple[np.ndarray, float]:
    """Class probabilities of each item from probes fitted on the other folds (stratified, seeded; embeddings
    standardised), averaged over `repeats` different fold splits, and the probes' regularisation. `labels` are
    0..n_classes-1 and every class has items."""
    import torch
    from sklearn.model_selection import StratifiedKFold

    strength = probe_strength(embeddings, labels, seed, min(3, folds))
    x = torch.from_numpy(standardised(embeddings))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    probs = np.zeros((len(labels), n_classes), dtype=np.float64)
    fitted = None
    for repeat in range(repeats):
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed + repeat).split(np.zeros(len(labels)), labels)
        for train, held in splits:
            fitted = fit_probe(x[torch.from_numpy(train)], y[torch.from_numpy(train)], n_classes, strength, fitted)
            probs[held] += probe_probabilities(x[torch.from_numpy(held)], fitted).double().numpy()
    return probs / probs.sum(axis=1, keepdims=True), strength


def classes_too_small(labels: np.ndarray, classes: list[str]) -> str | None:
    """Why label errors cannot be checked (a class with fewer than two items, too few to hold one out), or None."""
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2:
        return "label errors not checked: the labels name fewer than two classes"
    if counts.min() < 2:
        return (f"label errors not checked: every class needs at least two items ({classes[present[counts.argmin()]]} "
                f"has {counts.min()})")
    return None


def probe_judgement(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """Out-of-fold probabilities of the classes present in `labels` (columns in sorted class order) from the
    logistic-regression probe on the embeddings, and a line saying how they were made."""
    present, counts = np.unique(labels, return_counts=True)
    folds = int(min(FOLDS, counts.min()))
    probs, strength = out_of_fold_probabilities(embeddings, np.searchsorted(present, labels), len(present), seed, folds)
    return probs, (f"a logistic-regression probe on the embeddings ({folds} folds, {REPEATS} seeded splits averaged, "
                   f"C {strength:g} by cross-validated log loss)")


def confident_learning(labels: np.ndarray, probs: np.ndarray, classes: list[str], judged_by: str) -> LabelFindings:
    """Confident learning (cleanlab) on out-of-fold probabilities `probs` of the classes present in `labels`
    (indices into `classes`; columns in sorted class order): the issues, least likely label first."""
    import cleanlab.dataset
    import cleanlab.filter

    present = np.unique(labels)
    dense = np.searchsorted(present, labels)  # cleanlab wants every class column to have items: classes present
    issues = np.asarray(cleanlab.filter.find_label_issues(dense, probs, return_indices_ranked_by="self_confidence",
                                                         n_jobs=1), dtype=np.int64)
    full = np.zeros((len(labels), len(classes)))
    full[:, present] = probs
    names = [classes[c] for c in present]
    overlap = cleanlab.dataset.find_overlapping_classes(labels=dense, pred_probs=probs, class_names=names)
    overlapping = [{"class_a": row["Class Name A"], "class_b": row["Class Name B"],
                    "items": int(row["Num Overlapping Examples"]), "joint_probability": float(row["Joint Probability"])}
                   for _, row in overlap.iterrows() if row["Num Overlapping Examples"] > 0]
    return LabelFindings(len(present), issues, present[probs[issues].argmax(1)], probs[issues, dense[issues]], full,
                         overlapping, judged_by)

