"""`probe`: frozen backbone (BatchNorm statistics too), embeddings computed once (and cached), a head trained on
them with AdamW and early stopping on validation loss; the loss weights classes by `class_weight` (class_weights.py).
Each epoch's training and validation loss and validation score go to the run's logger (head_stage/...).

What the head trains on is the task's (`Task.frozen_features`): one embedding per item for item-level tasks, a
vector per word for token tagging (the last hidden state of its first sub-word, sentences x words x width). The head
applies to the last axis either way, and the task's loss and validation score read the leading ones."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import HeadstartError
from ..heads import HEADS, ClassificationHead, Classifier, trainable_head_kinds
from ..settings import check_choice, check_range, setting
from ..tasks.class_weights import CLASS_WEIGHT_CHOICES
from ..training import CurveLog
from .base import Strategy, TrainingRun, register_strategy

MIN_HEAD_STEPS = 600  # small data sets get more epochs, so the head sees enough updates


@register_strategy
@dataclass
class Probe(Strategy):
    """Settings of the head trained on fixed embeddings."""

    name = "probe"
    runs_distributed = True

    head: str = setting("linear", "Head: linear (default), or mlp (Dense 1024 relu + Dense n).")
    epochs: int = setting(60, "Training epochs (head for probe, network for finetune).")
    # lr None: 1e-3 for a linear head, 3e-4 for the MLP (which overfits within an epoch at 1e-3)
    lr: float | None = setting(None, "Learning rate: probe, of the head (default 1e-3 linear, 3e-4 mlp); finetune, "
                                     "of the last layers.")
    batch_size: int = setting(64, "Batch size (default 64 probe, 32 finetune).")
    weight_decay: float = setting(1e-4, "AdamW weight decay (default 1e-4 probe, 0.01 finetune).")
    patience: int = setting(8, "Epochs without improvement before stopping (8 probe, 3 finetune).")
    label_smoothing: float = setting(0.0, "Label smoothing (default 0 probe, 0.1 finetune).")
    class_weight: str = setting("auto", "Loss weight per class: balanced (rare classes weighted up, n / (classes x "
                                        "class count)), none, or auto (default: balanced when the largest class is "
                                        "over 5x the smallest).")

    def __post_init__(self) -> None:
        check_choice("head", self.head, trainable_head_kinds())
        check_choice("class_weight", self.class_weight, CLASS_WEIGHT_CHOICES)
        check_range("epochs", self.epochs, low=1, integer=True)
        check_range("lr", self.lr, low=0, low_open=True, high=10)
        check_range("batch_size", self.batch_size, low=1, integer=True)
        check_range("weight_decay", self.weight_decay, low=0, high=10)
        check_range("patience", self.patience, low=1, integer=True)
        check_range("label_smoothing", self.label_smoothing, low=0, high=1, high_open=True)

    def learning_rate(self) -> float:
        """`lr` when given, else the head's default (`probe_lr`: 1e-3 for the linear head, 3e-4 for the MLP)."""
        return self.lr if self.lr is not None else HEADS[self.head].probe_lr

    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        if not run.backbone.is_pretrained:
            raise HeadstartError("this backbone has no pre-trained weights, so a probe would learn on random "
                                 "features: use --strategy finetune to train it from scratch")
        train_x, val_x = run.embed_splits()
        weights, weighting = run.task.training_weights(run.train.labels, run.classes, self.class_weight)
        head, record = train_head(train_x, run.train, val_x, run.val, self, run.seed, weights,
                                  logger=run.metrics_logger())
        return Classifier(run.backbone, head), {"class_weight": weighting, "head_stage": record}


def train_head(train_x: np.ndarray, train: Dataset, val_x: np.ndarray, val: Dataset, settings: Probe, seed: int = 0,
               class_weight: torch.Tensor | None = None, logger: Any = None) -> tuple[ClassificationHead, dict]:
    """Fit a head for the data's task on embeddings of `train`; returns the head at its best validation loss and
    the training history. `class_weight`: per-class loss weights (None: unweighted), in the training loss and the
    validation loss alike. `logger`: a Lightning logger that each epoch's losses and score are logged to (step =
    epoch), under the manifest's name for this stage, head_stage/.

    A plain loop rather than Lightning: on cached embeddings an epoch takes milliseconds, and a trainer's
    per-step overhead would dominate.
    """
    torch.manual_seed(seed)
    task = train.task
    x, y = torch.from_numpy(train_x), torch.from_numpy(train.labels)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val.labels)
    head = ClassificationHead.for_task(task, x.shape[-1], train.classes, train.labels, settings.head)
    head.standardize.fit(torch.from_numpy(task.labeled_rows(train_x, train.labels)))
    lr = settings.learning_rate()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=settings.weight_decay)
    best_loss, best_state, best_epoch, history = float("inf"), None, 0, []
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x) / settings.batch_size)
    epochs = max(settings.epochs, math.ceil(MIN_HEAD_STEPS / steps_per_epoch))
    patience = max(settings.patience, math.ceil(MIN_HEAD_STEPS / 6 / steps_per_epoch))
    with CurveLog(logger) as curves:
        for epoch in range(epochs):
            head.train()
            train_loss = 0.0
            for idx in torch.randperm(len(x), generator=generator).split(settings.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = head.loss(head(x[idx]), y[idx], class_weight, settings.label_smoothing)
                loss.backward()
                optimizer.step()
                train_loss += loss.item() * len(idx) / len(x)  # the epoch's mean over items
            head.eval()
            with torch.no_grad():
                logits = head(vx)
                # Weighted as the training loss is: early stopping then keeps the head that is best at the objective
                # being trained (with balanced weights, loss per class averaged over classes), not at the plain loss
                # that the majority classes dominate.
                val_loss = head.loss(logits, vy, class_weight).item()
                val_score = task.validation_score(logits.double().numpy(), val.labels, head.params)
            history.append({"epoch": epoch, "val_loss": val_loss, task.val_metric: val_score})
            curves.add({"epoch": epoch, "head_stage/train_loss": train_loss, "head_stage/val_loss": val_loss,
                        f"head_stage/{task.val_metric}": val_score}, step=epoch)
            if val_loss < best_loss - 1e-4:
                best_loss, best_state, best_epoch = val_loss, copy.deepcopy(head.state_dict()), epoch
            elif epoch - best_epoch >= patience:
                break
    if best_state is None:
        raise HeadstartError("the head's validation loss is not a finite number (NaN or infinite embeddings: is the "
                             "backbone's training diverged?): check the backbone, or lower --lr")
    head.load_state_dict(best_state)
    head.eval()
    return head, {"lr": lr, "best_epoch": best_epoch, "epochs_run": len(history), "val_metric": task.val_metric,
                  "history": history}
