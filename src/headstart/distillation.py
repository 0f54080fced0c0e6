"""Distillation: a smaller student backbone learns a trained teacher's predictions on unlabeled data.

The teacher is any saved model, typically a large encoder fitted on few labels (mpnet with `contrastive`). It
labels the user's unlabeled items; the student (a smaller, faster backbone) is then fitted, by an ordinary
`fit` with any strategy, on those labels plus the real labeled training items. The student's data are split
exactly as the teacher's were (same source, sizes and seed; the pseudo-labels join the training split after
splitting), so it is validated and tested on the teacher's own real validation and test items, and its
manifest rebuilds them for `report` and `export` as any model's does.

This is knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network") with the
teacher's hard labels, and SetFit's few-shot distillation (Tunstall et al. 2022, arXiv:2209.11055: an mpnet
SetFit teacher, a MiniLM student, unlabeled text) in purpose. Departures from SetFit's recipe:
- the student's encoder learns the teacher's labels through its strategy (finetune for a small text encoder
  with many pseudo-labels) instead of regressing the teacher's cosine similarity on R = 20 pairs per
  unlabeled item: one pass per item and epoch instead of 2R, which is what a CPU can afford on thousands;
- hard labels rather than softened probabilities, so the student is a plain classification `fit` (its
  strategies, calibration, report and export unchanged); the teacher's mean confidence is recorded, not used.

Unlabeled items equal to an item of the validation or test split are dropped before labeling (they would leak
the teacher's view of the held-out items into training), as are those equal to a labeled training item (its
real label wins), repeats, and items the teacher cannot read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import distributed
from .data import Dataset, PseudoLabels, Splits
from .data.unlabeled import UnlabeledData, read_unlabeled
from .data.unreadable import drop_failures
from .errors import DataError, SettingsError
from .modalities import ensure_same_modality, get_modality
from .model import TrainedModel
from .strategies import STRATEGIES, Strategy, strategy_class

log = logging.getLogger("headstart")

# The student is split exactly as the teacher was: these come from the teacher's manifest
# (`TrainedModel.split_options`), not from the caller.
TEACHER_SPLIT_OPTIONS = ("labels_per_class", "val_size", "test_size", "seed", "text_column", "label_column", "test")


def new_items(unlabeled: UnlabeledData, splits: Splits) -> tuple[list[int], dict[str, int]]:
    """Indices of the unlabeled items that are in none of the labeled splits, each once; and counts of the rest."""
    digest = get_modality(unlabeled.modality).digest
    held_out = {digest(item) for part in (splits.val, splits.test) for item in part.items}
    labeled = {digest(item) for item in splits.train.items}
    kept: set = set()
    keep, dropped = [], {"dropped_in_val_or_test": 0, "dropped_in_train": 0, "dropped_repeats": 0}
    for i, item in enumerate(unlabeled.items):
        key = digest(item)
        reason = ("dropped_in_val_or_test" if key in held_out else "dropped_in_train" if key in labeled
                  else "dropped_repeats" if key in kept else None)
        if reason is None:
            kept.add(key)
            keep.append(i)
        else:
            dropped[reason] += 1
    return keep, dropped


def pseudo_label(teacher: TrainedModel, unlabeled: UnlabeledData, splits: Splits, precision: str = "auto"
                 ) -> PseudoLabels:
    """The teacher's labels for the unlabeled items that are new to it (see `new_items`), with their record."""
    ensure_same_modality(teacher.modality, unlabeled.modality, "the teacher", f"the unlabeled data ({unlabeled.source}) are",
                         f"give unlabeled {teacher.modality} data", DataError)
    keep, record = new_items(unlabeled, splits)
    if not keep:
        raise DataError(f"{unlabeled.source}: none of its {len(unlabeled)} items is new (all are in the teacher's "
                        "labeled splits): give unlabeled items the teacher has not seen")
    if record["dropped_in_val_or_test"]:
        log.info("distill: %d unlabeled items are in the validation or test split: left out",
                 record["dropped_in_val_or_test"])
    items = unlabeled.subset(keep).items
    log.info("distill: the teacher labels %d unlabeled items", len(items))
    probabilities, failures = teacher.scores(items, precision)
    classes = list(teacher.classes)
    dataset = Dataset(unlabeled.modality, items, probabilities.argmax(1), classes, name=f"{unlabeled.name}-pseudo")
    readable = drop_failures(dataset, failures, strict=False)
    if len(readable) == 0:
        raise DataError(f"{unlabeled.source}: the teacher could read none of its {len(items)} new items")
    dataset, probabilities = dataset.subset(readable), probabilities[readable]
    counts = dataset.class_counts()
    record.update({"unlabeled": unlabeled.source, "pseudo_labeled": len(dataset), "unreadable": len(failures),
                   "mean_confidence": round(float(probabilities.max(1).mean()), 4), "per_class": counts})
    return PseudoLabels(dataset, record)


def check_student_runs_here(strategy: str | Strategy) -> None:
    """Under torchrun the teacher's labeling is sharded by rank, and the student is trained by `fit`, which runs
    on several processes only with a strategy that has DDP (or sharded extraction). Another strategy is refused
    here, before the teacher labels anything, rather than after the labeling's minutes."""
    plan = strategy if isinstance(strategy, Strategy) else strategy_class(strategy)
    if distributed.world_size() > 1 and not plan.runs_distributed:
        able = ", ".join(name for name, cls in STRATEGIES.items() if cls.runs_distributed)
        raise SettingsError(f"distill's student strategy {plan.name} does not run on several processes yet: under "
                            f"torchrun pass --strategy with one of {able}, or run distill as one process")


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
    """Fit `backbone` (the student) on the teacher's labels for `unlabeled` plus the teacher's real training items,
    split as the teacher's data were; returns the student, whose manifest records the teacher and the labels.

    `teacher`: a model or its folder (RUN or RUN/model). `data`: the labeled data the teacher was fitted on, when
    its recorded source is not readable here. Other keyword arguments go to `fit` (`out`, `epochs`, `precision`
    ...), except the split options, which are the teacher's."""
    from .api import fit

    fixed = sorted(set(fit_options) & set(TEACHER_SPLIT_OPTIONS))
    if fixed:
        raise SettingsError(f"distill splits the data as the teacher's were, so {', '.join(fixed)} cannot be set: "
                            "leave them out (the student is tested on the teacher's test split)")
    check_student_runs_here(strategy)
    if not isinstance(teacher, TrainedModel):
        teacher = TrainedModel.load(teacher)
    if not teacher.task.one_class_per_item:  # the pseudo-labels are the teacher's most probable classes
        raise SettingsError(f"distill's teacher must be a classification model; this one is {teacher.task_name} "
                            "(not supported yet)")
    if not isinstance(unlabeled, UnlabeledData):
        unlabeled = read_unlabeled(unlabeled, unlabeled_column)
    splits = teacher.recorded_splits(data)
    pseudo = pseudo_label(teacher, unlabeled, splits, fit_options.get("precision", "auto"))
    pseudo.record["teacher"] = {"backbone": teacher.manifest.backbone_name, "strategy": teacher.manifest.strategy.name,
                                "test_accuracy": teacher.metrics.get("accuracy")}
    source = data if data is not None else teacher.manifest.data.source  # recorded_splits checked there is one
    return fit(source, backbone, strategy, pseudo_labels=pseudo, **teacher.split_options(), **fit_options)
