"""LoRA adapters (PEFT) in a backbone: injected by module name for training (the `lora` strategy) and for loading
a saved LoRA model, and folded into the layers they adapt when a model is merged.

On the loading floor, below the strategies, so that loading a saved LoRA model rebuilds its adapters without
importing any training code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import HeadstartError

if TYPE_CHECKING:
    from torch import nn


def inject_adapters(backbone: nn.Module, adapter: dict[str, Any], dropout: float) -> None:
    """Add LoRA adapters (PEFT) to the `targets` layers of `backbone` in place and freeze everything else."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=int(adapter["rank"]), lora_alpha=float(adapter["alpha"]), lora_dropout=dropout,
                        target_modules=list(adapter["targets"]), bias="none")
    try:
        inject_adapter_in_model(config, backbone)
    except ValueError as e:  # no layer matched, or a layer type PEFT cannot adapt
        raise HeadstartError(f"LoRA: {str(e).splitlines()[0][:200]} (targets: {', '.join(adapter['targets'][:6])}"
                             f"{', ...' if len(adapter['targets']) > 6 else ''}): name layers of this backbone "
                             "with --lora-targets") from None
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad = "lora_" in name


def merge_adapters(backbone: nn.Module) -> None:
    """Fold every adapter into the layer it adapts (W + alpha/r · B·A) and put the plain layer back.

    Hand-written because PEFT's merge_and_unload belongs to its PeftModel/LoraModel wrappers, while headstart
    injects adapters into its own backbone module; the two steps below are what that method does per layer."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(backbone.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = backbone.get_submodule(parent_name) if parent_name else backbone
            setattr(parent, child, module.get_base_layer())
    for parameter in backbone.parameters():
        parameter.requires_grad = True
