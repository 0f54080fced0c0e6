"""`finetune`: the head first on a frozen backbone, then everything with discriminative learning rates.

Stage 1 trains the head on cached embeddings (the probe): the backbone is frozen, so its forward pass need not
be repeated each epoch. Stage 2 (finetune_trainer.py, on Lightning) trains the whole network with per-layer-group
learning rates (smaller towards the input), linear warm-up then cosine decay, early stopping on validation
accuracy and the best checkpoint kept. If stage 2 never beats stage 1 on validation, the stage-1 model is kept.
Both stages weight the loss by class as `class_weight` says (class_weights.py).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from .. import distributed
from ..backbones.base import Backbone
from ..heads import ClassificationHead, Classifier, trainable_head_kinds
from ..settings import check_choice, check_range, setting
from ..tasks.class_weights import CLASS_WEIGHT_CHOICES
from .base import Strategy, TrainingRun, register_strategy
from .probe import Probe, train_head

log = logging.getLogger("headstart")

SCRATCH_LR = 3e-3  # random weights (smallcnn on digits: 98.6% in 15 epochs)


def same_head_on_every_rank(head: ClassificationHead, summary: dict[str, Any]) -> dict[str, Any]:
    """Under torchrun, rank 0's head-stage head and summary on every rank; returns the summary. Every rank fits the
    head on the same embeddings (shared through the cache) with the same seed, which gives the same head on CPU;
    taking rank 0's makes it certain wherever a kernel is not deterministic, so that stage 2 starts, and keeps
    or drops the head-stage model, alike on every rank. A collective: every rank calls it."""
    if distributed.world_size() == 1:
        return summary
    import torch

    state, summary = distributed.broadcast_object(({k: v.cpu().numpy() for k, v in head.state_dict().items()}, summary))
    head.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return summary


@register_strategy
@dataclass
class FineTune(Strategy):
    """Stage-2 settings. `lr` is the rate of the last layer group and the head; the first group gets lr/lr_ratio."""

    name = "finetune"
    needs_run_dir = True
    freezes_backbone = False
    runs_distributed = True

    epochs: int = 6
    lr: float | None = None
    lr_ratio: float | None = setting(None, "finetune: the first layer group learns at lr / lr-ratio (default 10 "
                                           "images, 2.5 text).")
    warmup_fraction: float = setting(0.1, "finetune: share of steps warming up (default 0.1).")
    weight_decay: float = 0.01
    batch_size: int = 32
    patience: int = 3
    label_smoothing: float = 0.1
    head: str = "linear"
    class_weight: str = "auto"  # auto: balanced when the largest class is more than 5x the smallest

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, low=1, integer=True)
        check_range("lr", self.lr, low=0, low_open=True, high=10)
        check_range("lr_ratio", self.lr_ratio, low=1)
        check_range("warmup_fraction", self.warmup_fraction, low=0, high=1, high_open=True)
        check_range("weight_decay", self.weight_decay, low=0, high=10)
        check_range("batch_size", self.batch_size, low=1, integer=True)
        check_range("patience", self.patience, low=1, integer=True)
        check_range("label_smoothing", self.label_smoothing, low=0, high=1, high_open=True)
        check_choice("head", self.head, trainable_head_kinds())
        check_choice("class_weight", self.class_weight, CLASS_WEIGHT_CHOICES)

    def learning_rate(self, backbone: Backbone) -> float:
        """The last layer group's rate: `lr` when given, else the backbone family's default (3e-3 for random weights)."""
        if self.lr is not None:
            return self.lr
        if not backbone.is_pretrained:
            return SCRATCH_LR
        return backbone.finetune_lr

    def learning_rate_ratio(self, backbone: Backbone) -> float:
        """How much slower the first layer group learns than the last."""
        if not backbone.is_pretrained:
            return 1.0  # random weights: no reason to hold early layers back
        if self.lr_ratio is not None:
            return self.lr_ratio
        return backbone.finetune_lr_ratio

    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        from .finetune_trainer import train_end_to_end  # Lightning: imported only when a finetune runs

        record: dict[str, Any] = {}
        baseline = before = None
        task = run.task
        if run.backbone.is_pretrained and not task.per_token:  # per-token tasks have no item embeddings
            started = time.perf_counter()
            train_x, val_x = run.embed_splits()
            weights, record["class_weight"] = task.training_weights(run.train.labels, run.classes, self.class_weight)
            head, record["head_stage"] = train_head(train_x, run.train, val_x, run.val, Probe(head=self.head),
                                                    run.seed, weights)
            run.timings["head_stage"] = time.perf_counter() - started
            record["head_stage"] = same_head_on_every_rank(head, record["head_stage"])
            classifier = Classifier(run.backbone, head)
            baseline = record["head_stage"]["history"][record["head_stage"]["best_epoch"]][task.val_metric]
            record.update(self.adapt(classifier))
            before = copy.deepcopy(classifier.state_dict())
        else:
            run.drop_unreadable()
            weights, record["class_weight"] = task.training_weights(run.train.labels, run.classes, self.class_weight)
            classifier = Classifier(run.backbone, ClassificationHead.for_task(
                task, run.backbone.embedding_dim, run.classes, run.train.labels, self.head))
            if run.backbone.is_pretrained:  # a per-token task: no head stage, but LoRA's adapters still go in
                record.update(self.adapt(classifier))
        record["finetune"] = train_end_to_end(classifier, run, self, self.learning_rate(run.backbone),
                                              self.learning_rate_ratio(run.backbone), weights)
        tuned = record["finetune"]["best_val_score"]
        if baseline is not None and tuned is not None and tuned < baseline:
            log.warning("%s's best validation score (%s) %.3f is below the head stage's %.3f: keeping the "
                        "head-stage model (try a lower --lr or more data)", self.name, task.val_metric, tuned,
                        baseline)
            classifier.load_state_dict(before)
            record["finetune"]["kept"] = "head stage"
        self.finish(classifier)
        return classifier, record

    def adapt(self, classifier: Classifier) -> dict[str, Any]:
        """Change what stage 2 trains, after the head stage (LoRA injects adapters and freezes the rest).
        Returns what the manifest should record about it. Full fine-tuning trains everything as it is."""
        return {}

    def finish(self, classifier: Classifier) -> None:
        """Last changes to the trained classifier before it is tested and saved (LoRA may merge adapters)."""
