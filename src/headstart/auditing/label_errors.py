"""Likely label errors and overlapping classes by confident learning (Northcutt, Jiang and Chuang, JAIR 2021).

A logistic-regression probe on the embeddings gives each item out-of-fold class probabilities (the item was not in
the folds its probe was fitted on, so a wrong label cannot teach the probe to agree with it); `cleanlab` estimates
the joint distribution of given and true labels from them and flags the items whose given label is least likely,
ranked by self-confidence (the out-of-fold probability of the given label), each with the class the probe prefers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("headstart")

FOLDS = 5
# Inverse L2 strengths tried on standardised embeddings; the one with the best cross-validated log loss is used.
# Few items per dimension want strong regularisation (SST-2, 1,500 minilm embeddings: 0.003; benchmarks/
# audit_quality.py), many items less; a fixed value is wrong for one or the other.
PROBE_CS = (0.001, 0.003, 0.01, 0.1, 1.0)
CHOOSE_C_ITEMS = 5_000  # the strength is chosen on at most this many items (seconds, not minutes, at 50,000)


@dataclass
class LabelFindings:
    """Flagged items (indices into the audited items, most likely wrong first), the class each is likely to be,
    its given label's out-of-fold probability, the out-of-fold probabilities of every item, and class pairs that
    overlap (joint probability of confusing them, most first)."""

    flagged: np.ndarray
    suggested: np.ndarray
    label_quality: np.ndarray
    probabilities: np.ndarray
    overlapping: list[dict]
    folds: int
    strength: float  # the probe's C


def probe_strength(embeddings: np.ndarray, labels: np.ndarray, seed: int, folds: int) -> float:
    """The regularisation (C) of `PROBE_CS` whose probe has the lowest cross-validated log loss, chosen on a
    seeded subsample of at most `CHOOSE_C_ITEMS` items."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    rows = np.arange(len(labels))
    if len(rows) > CHOOSE_C_ITEMS:
        sample = np.sort(np.random.default_rng(seed).choice(rows, CHOOSE_C_ITEMS, replace=False))
        if np.unique(labels[sample], return_counts=True)[1].min() >= 2:  # else a rare class: all items
            rows = sample
    x = embeddings[rows]
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    _, counts = np.unique(labels[rows], return_counts=True)
    cv = StratifiedKFold(int(min(folds, counts.min())), shuffle=True, random_state=seed)
    search = GridSearchCV(LogisticRegression(max_iter=300), {"C": list(PROBE_CS)}, scoring="neg_log_loss", cv=cv)
    return float(search.fit(x, labels[rows]).best_params_["C"])


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, seed: int,
                              folds: int = FOLDS) -> tuple[np.ndarray, float]:
    """Class probabilities of each item from a probe fitted on the other folds (stratified, seeded), and the
    probe's regularisation. Columns are all `n_classes` classes; a class without items gets probability 0."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present = np.unique(labels)
    strength = probe_strength(embeddings, labels, seed, min(3, folds))
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=300))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(probe, embeddings, labels, cv=split, method="predict_proba")
    full = np.zeros((len(labels), n_classes), dtype=np.float64)
    full[:, present] = probs
    return full, strength


def find_label_errors(embeddings: np.ndarray, labels: np.ndarray, classes: list[str], seed: int = 0
                      ) -> LabelFindings | None:
    """Confident learning on out-of-fold probe probabilities; None (with the reason logged) when a class has
    fewer than two items, too few to hold one out."""
    import cleanlab.dataset
    import cleanlab.filter

    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2 or counts.min() < 2:
        log.warning("label errors not checked: every class needs at least two items (%s has %d)",
                    classes[present[counts.argmin()]], counts.min())
        return None
    folds = int(min(FOLDS, counts.min()))
    dense = np.searchsorted(present, labels)  # cleanlab wants every class column to have items: classes present
    probs, strength = out_of_fold_probabilities(embeddings, dense, len(present), seed, folds)
    flagged = cleanlab.filter.find_label_issues(dense, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    flagged = np.asarray(flagged, dtype=np.int64)
    full = np.zeros((len(labels), len(classes)))
    full[:, present] = probs
    names = [classes[c] for c in present]
    overlap = cleanlab.dataset.find_overlapping_classes(labels=dense, pred_probs=probs, class_names=names)
    overlapping = [{"class_a": row["Class Name A"], "class_b": row["Class Name B"],
                    "items": int(row["Num Overlapping Examples"]), "joint_probability": float(row["Joint Probability"])}
                   for _, row in overlap.iterrows() if row["Num Overlapping Examples"] > 0]
    return LabelFindings(flagged, present[probs[flagged].argmax(1)], probs[flagged, dense[flagged]], full,
                         overlapping, folds, strength)
