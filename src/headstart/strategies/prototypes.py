"""`prototypes`: nearest class mean on the frozen backbone's centred, L2-normalised embeddings ("CL2N", SimpleShot:
Wang et al. 2019, arXiv:1911.04623). No gradient step: each class's weight row is the mean of its training items'
unit rows, and an item's logits are its cosines to those means times a fixed scale (the validation split then tunes
a temperature, as for every head).

Why it exists: with a handful of labels per class the probe's per-feature standardisation is estimated from those
few items and its head overfits them. Real fits on six shared sets, 3 draws each (benchmarks/few_labels.py;
RESULTS.md, "Issue 24, tenth and eleventh rounds"): nearest class mean scored above the probe in 21 of 24 cells at
1-5 labels per class (CIFAR-10 with efficientnet_lite0 at one per class 0.438 against 0.374), and the probe's learned
weights catch up at 60-300 labels in all. `auto` fits it beside the probe with few labels and keeps the better on
validation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import HeadstartError
from ..heads import Classifier, PrototypeHead
from ..settings import check_range, setting
from .base import Strategy, TrainingRun, register_strategy


@register_strategy
@dataclass
class Prototypes(Strategy):
    """Settings of the nearest-class-mean head."""

    name = "prototypes"
    tasks = ("classification",)  # one class per item: a class's mean is over the items labeled with it
    # Under torchrun the embedding pass is sharded and gathered (`embed_splits`), and the class means that follow
    # are the same on every rank; nothing is written but rank 0's model. `auto` fits it on every rank too.
    runs_distributed = True

    logit_scale: float = setting(10.0, "Cosine-to-class-mean times this is the logit (before the temperature that "
                                       "validation tunes): 10 puts a 0.1 cosine gap at e:1 odds.")

    def __post_init__(self) -> None:
        check_range("logit_scale", self.logit_scale, low=0, low_open=True, high=1000)

    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        if not run.backbone.is_pretrained:
            raise HeadstartError("this backbone has no pre-trained weights, so class means of its random features "
                                 "would mean nothing: use --strategy finetune to train it from scratch")
        train_x, _ = run.embed_splits()
        started = time.perf_counter()
        head = PrototypeHead.from_class_means(run.task, train_x, run.train.labels, run.classes, self.logit_scale)
        return Classifier(run.backbone, head), {"prototypes": {"classes": len(run.classes), "items": len(train_x),
                                                                "seconds": round(time.perf_counter() - started, 4)}}
