"""Out-of-fold class probabilities from cross-validated `fit`s of a training strategy (finetune, lora, ...).

Confident learning can only be as precise as the model that judges the labels. The probe on frozen embeddings
(`label_errors.probe_judgement`) costs seconds, but where the frozen features separate the classes poorly it is
wrong on many *correct* labels, and those look as wrong to it as the flipped ones. SST-2 with 10% of labels
flipped (benchmarks/audit_quality.py, RESULTS.md "Issue 24, eighth round"): the minilm probe is right on about 79%
of the true labels out of fold and its likely errors have precision 0.38, recall 0.71; minilm fine-tuned on the other
folds (`audit(..., strategy="finetune", epochs=3)`) is right on 84% and gives 0.47 / 0.77 (TREC-6: 0.64 / 0.82 ->
0.73 / 0.88). Each fold costs one `fit`: minutes where the probe costs seconds, so it is asked for, never the
default.

Each item is predicted by the model fitted on the folds it is not in (stratified, seeded by the run's seed), so a
wrong label cannot teach its judge to agree with it. A fold's fit keeps its own validation split for early stopping
and is tested on the held-out fold (its given labels, noisy or not: the test figures are not reported).
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import numpy as np

from .._util import headstart_log_at
from ..options import BackboneOptions, DataOptions, RunOptions
from .label_errors import FOLDS

log = logging.getLogger("headstart")


def fitted_judgement(items: list, labels: np.ndarray, classes: list[str], backbone: BackboneOptions, strategy: str,
                     settings: dict[str, Any], run: RunOptions) -> tuple[np.ndarray, str]:
    """Out-of-fold probabilities of the classes present in `labels` (indices into `classes`; columns in sorted
    class order) from `fit(..., strategy, **settings)` on the other folds, and a line saying how they were made.
    Every class needs at least two items (one to hold out)."""
    from sklearn.model_selection import StratifiedKFold

    from ..api import fit

    present, counts = np.unique(labels, return_counts=True)
    folds = int(min(FOLDS, counts.min()))
    names = [classes[c] for c in labels]
    probs = np.zeros((len(labels), len(present)))
    splits = StratifiedKFold(folds, shuffle=True, random_state=run.seed).split(np.zeros(len(labels)), labels)
    for fold, (train, held) in enumerate(splits, 1):
        log.info("label errors: fold %d of %d, %s of %s on %d items", fold, folds, strategy, backbone.name, len(train))
        held_items = [items[i] for i in held]
        # The fold's checkpoints go to a folder removed after it; its log is held at errors: a fit's split plan and
        # its warnings about a small test split would repeat for every fold, about figures the audit does not show.
        with tempfile.TemporaryDirectory(prefix="headstart-audit-fold-") as folder, headstart_log_at(logging.ERROR):
            model = fit(([items[i] for i in train], [names[i] for i in train]), backbone, strategy, out=folder,
                        data_options=DataOptions(test=(held_items, [names[i] for i in held])), run_options=run,
                        **settings)
            fold_probs = np.asarray(model.predict_proba(held_items), dtype=np.float64)
        probs[held] = fold_probs[:, [list(model.classes).index(classes[c]) for c in present]]
    return probs, f"{strategy} of {backbone.name} fitted on the other folds ({folds} folds)"
