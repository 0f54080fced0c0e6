"""`auto`: choose prototypes, probe, finetune, lora or contrastive from the data and the backbone, say why, then run it.

The rule, first match wins (the figures behind each threshold are in benchmarks/RESULTS.md):

1. The backbone has no pre-trained weights -> **finetune** (a probe on random features learns nothing).
2. A sentence encoder (text), at most 64 labels per class and at most 6 classes -> **contrastive**. With
   minilm (issue 13): SST-2 (2 classes), 8 labels per class, contrastive 62.9% against finetune's 59.3% and
   the probe's 54.8%; 64 per class, 79.6% (one draw) against 74.9% and 71.1%; TREC-6 (6 classes), 8 per class,
   81.8% against 43.8% for both. But on Banking77 at 8 per class it lost to the probe: 95.4% against 98.7% on
   10 of its intents, 75.4% against 81.0% on all 77 (after 18 minutes of pairs against the probe's seconds).
   SetFit's 20 negative pairs per example spread over more classes, and a sentence encoder's probe is strong
   on intents. 6 is the most classes contrastive was measured to help with.
3. At most 5 labels per class -> **prototypes** (nearest class mean on centred unit embeddings). Real `fit`s on six
   shared sets at 1-20 labels per class, 3 draws each (benchmarks/few_labels.py; RESULTS.md, "Issue 24, tenth
   round"): above the probe in 21 of the 24 cells at 1-5 per class (CIFAR-10 with lite0 at one per class 0.438
   against 0.374), below it in 3 by 1.6-4.6 points; from 10-20 per class the probe's learned weights catch up.
4. Fewer than 100 labels per class -> **probe**. Fashion-MNIST: the probe is level with or above finetune with
   1 and 10 labels per class and below it from 100 on (issue 4); FSDD: the speech embedding's probe matches or
   beats its finetune at every count (issue 10); a probe costs one forward pass per item.
5. A backbone of more than 60M parameters -> **lora**: end-to-end adaptation, but with about 1.5% of the
   parameters learning (optimizer state and gradients for those only), for encoders such as mpnet (110M).
6. Otherwise -> **finetune** (SST-2, all labels: 88.1% against the probe's 80.5%; issue 2).

"Labels per class" is the median number of training examples per class, after `--labels-per-class`; the
modality and the sentence-encoder mark come from the backbone. The choice and its reason are logged as one
line (`auto: contrastive (text, 8 labels/class <= 64, 2 classes <= 6, sentence encoder)`) and stored in the
manifest; the chosen strategy runs with its own defaults and the class weighting asked for (`class_weight`, which
every strategy above but prototypes takes: class means weigh every class alike).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..backbones.base import Backbone
from ..errors import HeadstartError
from ..heads import Classifier
from ..settings import check_choice
from ..tasks.class_weights import CLASS_WEIGHT_CHOICES
from .base import Strategy, TrainingRun, register_strategy, strategy_class

log = logging.getLogger("headstart")

CONTRASTIVE_MAX_LABELS = 64  # per class, text with a sentence encoder
CONTRASTIVE_MAX_CLASSES = 6
PROTOTYPES_MAX_LABELS = 5  # per class
PROBE_MAX_LABELS = 99  # per class: fewer than 100
LORA_MIN_PARAMETERS = 60_000_000


def choose_strategy(backbone: Backbone, labels_per_class: float, n_classes: int) -> tuple[str, str]:
    """The strategy `auto` runs for this backbone, training-set size and number of classes, and the one-line
    reason."""
    n = f"{labels_per_class:g} labels/class"
    size = sum(p.numel() for p in backbone.parameters())
    if not backbone.is_pretrained:
        return "finetune", f"{backbone.modality}, no pre-trained weights to probe"
    few_for_pairs = labels_per_class <= CONTRASTIVE_MAX_LABELS and n_classes <= CONTRASTIVE_MAX_CLASSES
    if backbone.sentence_encoder and few_for_pairs:  # sentence encoders are text's
        return "contrastive", (f"{backbone.modality}, {n} <= {CONTRASTIVE_MAX_LABELS}, {n_classes} classes <= "
                               f"{CONTRASTIVE_MAX_CLASSES}, sentence encoder")
    if labels_per_class <= PROTOTYPES_MAX_LABELS:
        return "prototypes", (f"{backbone.modality}, {n} <= {PROTOTYPES_MAX_LABELS}: too few to learn weights from, "
                              "class means instead")
    if labels_per_class <= PROBE_MAX_LABELS:
        return "probe", f"{backbone.modality}, {n} < {PROBE_MAX_LABELS + 1}: fine-tuning would overfit"
    if size > LORA_MIN_PARAMETERS:
        return "lora", f"{backbone.modality}, {n}, {size / 1e6:.0f}M parameters > {LORA_MIN_PARAMETERS // 10**6}M"
    return "finetune", f"{backbone.modality}, {n} >= {PROBE_MAX_LABELS + 1}, {size / 1e6:.0f}M parameters"


@register_strategy
@dataclass
class Auto(Strategy):
    """One setting, passed on: the chosen strategy runs with its defaults and this class weighting."""

    name = "auto"
    tasks = ("classification",)  # its rule counts labels per class and picks contrastive, which pairs classes
    # Every strategy it picks runs under torchrun, and every rank picks the same one (from the same data).
    runs_distributed = True

    class_weight: str = "auto"  # auto: balanced when the largest class is more than 5x the smallest

    def __post_init__(self) -> None:
        check_choice("class_weight", self.class_weight, CLASS_WEIGHT_CHOICES)

    @property
    def freezes_backbone(self) -> bool:  # type: ignore[override]
        """Whether the backbone stays frozen: the chosen strategy's answer once `train` has chosen one, False before."""
        chosen = getattr(self, "_chosen", None)
        return chosen.freezes_backbone if chosen is not None else False

    def settings(self) -> dict[str, Any]:
        """The class weighting; after training also which strategy ran, why, and its settings (what loading needs
        to rebuild the chosen strategy's network: `structures.as_chosen`)."""
        chosen = getattr(self, "_chosen", None)
        if chosen is None:
            return {"class_weight": self.class_weight}
        return {"class_weight": self.class_weight, "chosen": chosen.name, "reason": self._reason,
                "chosen_settings": chosen.settings()}

    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        counts = list(run.train.class_counts().values())
        labels_per_class = float(np.median(counts)) if counts else 0.0
        name, reason = choose_strategy(run.backbone, labels_per_class, len(run.classes))
        log.info("auto: %s (%s)", name, reason)
        cls = strategy_class(name)
        # Class means weigh every class alike by construction: a strategy without the setting is not given it.
        weighting = {"class_weight": self.class_weight} if "class_weight" in {f.name for f in fields(cls)} else {}
        chosen = cls(**weighting)
        if chosen.needs_run_dir and run.run_dir is None:
            raise HeadstartError(f"auto chose {name} ({reason}), which writes checkpoints: pass out=... (--out)")
        self._chosen, self._reason = chosen, reason
        classifier, record = chosen.train(run)
        return classifier, {"auto": {"chosen": name, "reason": reason, "labels_per_class": labels_per_class},
                            **record}
