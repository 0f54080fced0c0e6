"""`lora`: low-rank adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
arXiv:2106.09685), injected with PEFT.

The stages are finetune's (the head first on cached embeddings, then end to end on Lightning, early stopping,
the head-stage model kept if adapting never beats it), except that stage 2 trains only the head and, beside each
chosen linear (or 1x1 convolution) layer W, an update B·A of rank r scaled by alpha / r, with B starting at zero
so that training starts from the head-stage model. The backbone's own weights stay frozen: about 1-2% of the
parameters learn, so optimizer state is small and large encoders become affordable to adapt.

Defaults come from the backbone family (`Backbone.lora_rank`, `lora_alpha`, `lora_lr`, `lora_targets()`): rank
8 and alpha 16 as in the paper's GLUE runs; for transformer encoders every linear layer of the transformer
layers (QLoRA, Dettmers et al. 2023, found that adapting only the attention's query and value, the paper's
choice, falls short of full fine-tuning); for timm CNNs the pointwise convolutions. Departures: one learning rate
for adapters and head (no discriminative rates: the adapters start at zero everywhere), label smoothing and the
warm-up/cosine schedule of finetune.

The saved model holds the frozen backbone weights, the adapters (`lora_A`/`lora_B` tensors) and the head in one
safetensors file; loading injects the same adapters (`structures.with_adapters`, which imports no training
code) before the weights load. With `merge`, the
adapters are folded into the weights they adapt after training (W + alpha/r · B·A), and the saved model is a
plain backbone and head that predicts and exports exactly like a fine-tuned one, with no adapter layers at
inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..adapters import inject_adapters, merge_adapters
from ..backbones.base import Backbone
from ..errors import HeadstartError
from ..heads import Classifier
from ..settings import check_range, setting
from .base import TrainingRun, register_strategy
from .finetune import FineTune


@register_strategy
@dataclass
class LoRA(FineTune):
    """finetune's settings plus the adapters'. `lr` is the adapters' and the head's rate (default: the family's
    `lora_lr`); `lr_ratio` defaults to 1 (one rate for all adapters)."""

    name = "lora"

    rank: int | None = setting(None, "lora: adapter rank (default the backbone family's, 8).")
    alpha: float | None = setting(None, "lora: adapter scale alpha; updates are scaled by alpha/rank (default 16).")
    dropout: float = setting(0.1, "lora: dropout on the adapters' input (the paper's 0.1 on GLUE).")
    targets: list[str] | None = setting(None, "lora: comma list of layer names to adapt (default: every linear layer "
                                              "of a transformer; a CNN's 1x1 convolutions).", flag="lora-targets",
                                        parse=lambda text: str(text).split(","))
    merge: bool = setting(False, "lora: fold the adapters into the weights after training.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("rank", self.rank, low=1, integer=True)
        check_range("alpha", self.alpha, low=0, low_open=True)
        check_range("dropout", self.dropout, low=0, high=1, high_open=True)
        if self.targets is not None and (isinstance(self.targets, str) or not self.targets
                                         or not all(isinstance(t, str) and t for t in self.targets)):
            raise HeadstartError(f"targets (--lora-targets) must be a non-empty list of module names, got "
                                 f"{self.targets!r}")

    def learning_rate(self, backbone: Backbone) -> float:
        """The adapters' and head's rate: `lr` when given, else the backbone family's LoRA default."""
        return self.lr if self.lr is not None else backbone.lora_lr

    def learning_rate_ratio(self, backbone: Backbone) -> float:
        """How much slower the first layer group learns: 1 (one rate) unless `lr_ratio` says otherwise."""
        return self.lr_ratio if self.lr_ratio is not None else 1.0

    def resolved(self, backbone: Backbone) -> dict[str, Any]:
        """The adapter settings actually used: the user's, else the backbone family's defaults."""
        return {"rank": self.rank or backbone.lora_rank, "alpha": self.alpha or backbone.lora_alpha,
                "targets": list(self.targets or backbone.lora_targets())}

    def settings(self) -> dict[str, Any]:
        """The fields, with the adapter defaults resolved once training has resolved them (so that the saved
        model records, and `restore` rebuilds, exactly the adapters it was trained with)."""
        return {**super().settings(), **getattr(self, "_resolved", {})}

    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        if not run.backbone.is_pretrained:
            raise HeadstartError("LoRA adapts pre-trained weights, and this backbone has none: use --strategy "
                                 "finetune to train it from scratch")
        self._resolved = self.resolved(run.backbone)
        return super().train(run)

    def adapt(self, classifier: Classifier) -> dict[str, Any]:
        inject_adapters(classifier.backbone, self._resolved, self.dropout)
        trainable = sum(p.numel() for p in classifier.parameters() if p.requires_grad)
        total = sum(p.numel() for p in classifier.parameters())
        adapters = trainable - sum(p.numel() for p in classifier.head.parameters())
        return {"lora": {**self._resolved, "dropout": self.dropout, "trainable_parameters": trainable,
                         "adapter_parameters": adapters, "total_parameters": total,
                         "trainable_fraction": trainable / total, "merged": self.merge}}

    def finish(self, classifier: Classifier) -> None:
        if self.merge:
            merge_adapters(classifier.backbone)
