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
3. Fewer than 100 labels per class -> **probe** and **prototypes** (nearest class mean on centred unit
   embeddings), both fitted on the cached embeddings (seconds), **the better on validation kept**. Which one wins
   depends on the data: real `fit`s at 1-50 labels per class, 3 draws each (benchmarks/few_labels.py; RESULTS.md,
   "Issue 24, eleventh round"): on the six shared sets and Fashion-MNIST class means won below 60-300 labels in all
   (CIFAR-10 with lite0 at 10 per class 64.9% against 63.8%, hymenoptera at 8 per class 94.1% against 81.7%), but
   on scikit-learn's digits (ImageNet features of 8x8 images) the probe won at every count, by up to 23 points: no
   rule on counts alone chose well on all eight. The guess, class means at up to 2 labels per class or 100 labels
   in all (`prefers_class_means`), the probe above, is kept unless the other leads on validation accuracy by more
   than one standard error (`_better_on_validation`): 0.29 points lost on average against the better of the two
   over the 73 cells, against 0.81 for the guess alone and 1.13 for class means at up to 5 per class. Why not
   fine-tuning below 100 per class: on Fashion-MNIST the probe is level with or above finetune with 1 and 10
   labels per class and below it from 100 on (issue 4); on FSDD the speech embedding's probe matches or beats its
   finetune at every count (issue 10).
4. A backbone of more than 60M parameters -> **lora**: end-to-end adaptation, but with about 1.5% of the
   parameters learning (optimizer state and gradients for those only), for encoders such as mpnet (110M).
5. Otherwise -> **finetune** (SST-2, all labels: 88.1% against the probe's 80.5%; issue 2).

"Labels per class" is the median number of training examples per class, after `--labels-per-class`; the
modality and the sentence-encoder mark come from the backbone. The choice and its reason are logged as one
line (`auto: contrastive (text, 8 labels/class <= 64, 2 classes <= 6, sentence encoder)`; with two candidates,
their validation scores too) and stored in the manifest; the chosen strategy runs with its own defaults and the
class weighting asked for (`class_weight`, which every strategy above but prototypes takes: class means weigh every
class alike).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

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
PROTOTYPES_MAX_PER_CLASS = 2  # labels per class, whatever their total
PROTOTYPES_MAX_TOTAL = 100  # labeled items in all, whatever the number of classes
PROBE_MAX_LABELS = 99  # per class: fewer than 100
LORA_MIN_PARAMETERS = 60_000_000


def prefers_class_means(labels_per_class: float, n_labels: int) -> bool:
    """Whether class means are the better guess before validation has spoken (rule 3's guess): at most
    `PROTOTYPES_MAX_PER_CLASS` labels per class or `PROTOTYPES_MAX_TOTAL` in all."""
    return labels_per_class <= PROTOTYPES_MAX_PER_CLASS or n_labels <= PROTOTYPES_MAX_TOTAL


def choose_strategy(backbone: Backbone, labels_per_class: float, n_classes: int, n_labels: int
                    ) -> tuple[tuple[str, ...], str]:
    """The strategies `auto` fits for this backbone, labels per class (median), number of classes and of training
    items (one, or two whose better on validation is kept, the first winning ties), and the one-line reason."""
    n = f"{labels_per_class:g} labels/class"
    size = sum(p.numel() for p in backbone.parameters())
    if not backbone.is_pretrained:
        return ("finetune",), f"{backbone.modality}, no pre-trained weights to probe"
    few_for_pairs = labels_per_class <= CONTRASTIVE_MAX_LABELS and n_classes <= CONTRASTIVE_MAX_CLASSES
    if backbone.sentence_encoder and few_for_pairs:  # sentence encoders are text's
        return ("contrastive",), (f"{backbone.modality}, {n} <= {CONTRASTIVE_MAX_LABELS}, {n_classes} classes <= "
                                  f"{CONTRASTIVE_MAX_CLASSES}, sentence encoder")
    if labels_per_class <= PROBE_MAX_LABELS:
        pair = ("prototypes", "probe") if prefers_class_means(labels_per_class, n_labels) else ("probe", "prototypes")
        return pair, f"{backbone.modality}, {n} < {PROBE_MAX_LABELS + 1}: fine-tuning would overfit"
    if size > LORA_MIN_PARAMETERS:
        return ("lora",), f"{backbone.modality}, {n}, {size / 1e6:.0f}M parameters > {LORA_MIN_PARAMETERS // 10**6}M"
    return ("finetune",), f"{backbone.modality}, {n} >= {PROBE_MAX_LABELS + 1}, {size / 1e6:.0f}M parameters"


class Candidate(NamedTuple):
    """A strategy `auto` trained, what it made, and its validation score (NaN where there is none)."""

    strategy: Strategy
    classifier: Classifier
    record: dict[str, Any]
    val_score: float


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
        names, reason = choose_strategy(run.backbone, labels_per_class, len(run.classes), len(run.train))
        fitted = [self._fit(name, reason, run) for name in names]
        if len(fitted) > 1:
            fitted, reason = self._better_on_validation(fitted, reason, run)
        kept = fitted[0]
        log.info("auto: %s (%s)", kept.strategy.name, reason)
        self._chosen, self._reason = kept.strategy, reason
        return kept.classifier, {"auto": {"chosen": kept.strategy.name, "reason": reason,
                                          "labels_per_class": labels_per_class}, **kept.record}

    @staticmethod
    def _better_on_validation(fitted: list[Candidate], reason: str, run: TrainingRun
                              ) -> tuple[list[Candidate], str]:
        """`fitted` (the prior's guess first) reordered so that the one to keep comes first, and the reason with
        the validation scores. The guess is kept unless the other beats it by more than one standard error of an
        accuracy on this validation split, 0.5 / sqrt(items): a few validation items decide little (on eight sets,
        switching on any gap lost 0.47 points against the better of the two on average, switching past the margin
        0.29, never switching 0.81; RESULTS.md, "Issue 24, eleventh round")."""
        guess, other = fitted
        margin = 0.5 / max(len(run.val), 1) ** 0.5
        if other.val_score - guess.val_score > margin:  # False when either score is missing (NaN)
            fitted = [other, guess]
        scores = ", ".join(f"{f.strategy.name} {f.val_score:.3f}" for f in (guess, other))
        return fitted, f"{reason}; {run.task.val_metric}: {scores}, a switch needs > +{margin:.3f}"

    def _fit(self, name: str, reason: str, run: TrainingRun) -> Candidate:
        """Train strategy `name` with its defaults (and the class weighting, where it takes one); with its
        validation score, for choosing between candidates (frozen-backbone strategies: the cached embeddings)."""
        cls = strategy_class(name)
        # Class means weigh every class alike by construction: a strategy without the setting is not given it.
        weighting = {"class_weight": self.class_weight} if "class_weight" in {f.name for f in fields(cls)} else {}
        strategy = cls(**weighting)
        if strategy.needs_run_dir and run.run_dir is None:
            raise HeadstartError(f"auto chose {name} ({reason}), which writes checkpoints: pass out=... (--out)")
        classifier, record = strategy.train(run)
        score = float("nan")
        if run.val_embeddings is not None and strategy.freezes_backbone:
            head = classifier.head
            score = run.task.validation_score(head.logits(run.val_embeddings), run.val.labels, head.params)
        return Candidate(strategy, classifier, record, score)
