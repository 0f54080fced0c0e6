"""Distillation: a smaller student backbone learns a trained teacher's predictions on unlabeled data.

The teacher is any saved model, typically a large encoder fitted on few labels (mpnet with `contrastive`). It
labels the user's unlabeled items; the student (a smaller, faster backbone) is then fitted, by an ordinary
`fit` with any strategy, on those labels plus the real labeled training items, and validated and tested on the
teacher's own real validation and test splits, so that student and teacher are measured on the same items.

This is knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network") with the
teacher's hard labels, and SetFit's few-shot distillation (Tunstall et al. 2022, arXiv:2209.11055, section 6:
an mpnet SetFit teacher, a MiniLM student, unlabeled text) in purpose. Departures from SetFit's recipe:
- the student's encoder learns the teacher's labels through its strategy (finetune for a small text encoder
  with many pseudo-labels) instead of regressing the teacher's cosine similarity on R pairs per unlabeled
  item: one pass per item per epoch instead of 2R, which is what a CPU can afford on thousands of items;
- hard labels rather than softened probabilities, so the student is a plain classification `fit` (its
  strategies, calibration, report and export unchanged); the teacher's confidence is recorded, not used.

Unlabeled items equal to an item of the validation or test split are dropped before labeling (they would leak
the teacher's view of the held-out items into training), as are those equal to a labeled training item (its
real label wins).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, Splits
from .errors import DataError, HeadstartError
from .modalities import ensure_same_modality, get_modality
from .model import TrainedModel
from .pretraining.unlabeled import UnlabeledData, read_unlabeled

log = logging.getLogger("headstart")


def teacher_splits(teacher: TrainedModel, data: Any = None) -> Splits:
    """The teacher's real train/validation/test splits, rebuilt from its manifest (`data` overrides the recorded
    source, e.g. when the teacher was fitted on an in-memory data set)."""
    from .api import prepare_splits

    record = teacher.manifest.data
    if record is None:
        raise HeadstartError("the teacher model records no data (saved by an old version): pass the labeled data "
                             "it was fitted on (--data)")
    source = data if data is not None else record.source
    if data is None and not Path(source).expanduser().exists() and source not in _builtins():
        raise DataError(f"the teacher was fitted on '{source}', which is not a path here: pass the same labeled "
                        "data (--data) so that the student is tested on the teacher's test split")
    return prepare_splits(source, record.text_column, record.label_column, record.val_size or 0.1,
                    record.test_size or 0.2, record.labels_per_class, record.seed)


def _builtins() -> set[str]:
    from .data.builtins import BUILTINS

    return set(BUILTINS)


def pseudo_label(teacher: TrainedModel, unlabeled: UnlabeledData, splits: Splits) -> tuple[Dataset, dict[str, Any]]:
    """The teacher's labels for the unlabeled items, less those found in the labeled splits; and a record of it."""
    ensure_same_modality(teacher.modality, unlabeled.modality, "the teacher", "the unlabeled data are")
    digest = get_modality(unlabeled.modality).digest
    held_out = {digest(item) for part in (splits.val, splits.test) for item in part.items}
    labeled = {digest(item) for item in splits.train.items}
    keep, leaked, duplicates = [], 0, 0
    for i, item in enumerate(unlabeled.items):
        key = digest(item)
        if key in held_out:
            leaked += 1
        elif key in labeled:
            duplicates += 1
        else:
            keep.append(i)
    if not keep:
        raise DataError(f"{unlabeled.source}: none of its {len(unlabeled)} items is new (all are in the labeled "
                        "splits): give unlabeled items the teacher has not seen")
    if leaked:
        log.info("distill: %d unlabeled items are in the validation or test split: left out", leaked)
    items = unlabeled.subset(keep).items
    log.info("distill: the teacher labels %d unlabeled items", len(items))
    probabilities = teacher.predict_proba(items)
    labels = probabilities.argmax(1)
    confidence = probabilities.max(1)
    counts = np.bincount(labels, minlength=len(teacher.classes))
    record = {"unlabeled": unlabeled.source, "pseudo_labeled": len(items), "dropped_in_val_or_test": leaked,
              "dropped_in_train": duplicates, "mean_confidence": round(float(confidence.mean()), 4),
              "per_class": {c: int(n) for c, n in zip(teacher.classes, counts)}}
    dataset = Dataset(unlabeled.modality, items, labels, list(teacher.classes), name=f"{unlabeled.name}-pseudo")
    return dataset, record


def concatenate(first: Dataset, second: Dataset, name: str) -> Dataset:
    """Two data sets with the same classes as one (items stay arrays when both are arrays)."""
    if isinstance(first.items, np.ndarray) and isinstance(second.items, np.ndarray):
        items: Any = np.concatenate([first.items, second.items])
    else:
        items = list(first.items) + list(second.items)
    return Dataset(first.modality, items, np.concatenate([first.labels, second.labels]), list(first.classes), name)


def distill(
    teacher: TrainedModel | str | Path,
    unlabeled: str | Path | UnlabeledData,
    backbone: str = "minilm",
    strategy: str = "auto",
    *,
    data: Any = None,
    unlabeled_column: str | None = None,
    **fit_options: Any,
) -> TrainedModel:
    """Fit `backbone` (the student) on the teacher's labels for `unlabeled` plus the teacher's real training
    items; validate and test it on the teacher's real splits. `data`: the labeled data the teacher was fitted on,
    when its recorded source is not a path here. Other keyword arguments go to `fit` (`out`, `epochs`, ...).
    Returns the student; its manifest records the teacher and the pseudo-labels."""
    from .api import fit

    if not isinstance(teacher, TrainedModel):
        teacher = TrainedModel.load(teacher)
    if not isinstance(unlabeled, UnlabeledData):
        unlabeled = read_unlabeled(unlabeled, unlabeled_column)
    splits = teacher_splits(teacher, data)
    if list(splits.classes) != list(teacher.classes):
        raise DataError(f"the labeled data's classes {splits.classes} differ from the teacher's {teacher.classes}: "
                        "pass the data the teacher was fitted on (--data)")
    pseudo, record = pseudo_label(teacher, unlabeled, splits)
    record["teacher"] = {"backbone": teacher.manifest.backbone_name, "strategy": teacher.manifest.strategy.name,
                         "test_accuracy": teacher.metrics.get("accuracy")}
    train = concatenate(splits.train, pseudo, name=f"{splits.train.name}+{pseudo.name}")
    fit_options.setdefault("seed", teacher.manifest.data.seed if teacher.manifest.data else 0)
    return fit(Splits(train, splits.val, splits.test), backbone, strategy, distillation=record, **fit_options)
