"""Inference copies of image backbones with each BatchNorm folded into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel affine map, so it can be merged into the weights and bias of the
convolution before it. On CPU that removes a whole pass over every feature map: batch norm was 30% of
EfficientNet-Lite0's extraction time in the profile (benchmarks/RESULTS.md).

Written by hand because no library covers our backbones: `torch.fx.experimental.optimization.fuse` needs a
traceable model whose BatchNorms are plain `nn.BatchNorm2d` leaves, and `torch.ao.quantization.fuse_modules`
needs the pairs by name and exact types; timm's `BatchNormAct2d` (BN + dropout + activation in one module) fits
neither. The arithmetic is PyTorch's own `fuse_conv_bn_eval`; only finding the pairs is ours. Pairs are found
by watching one forward pass (a BatchNorm whose input is exactly a convolution's output), and the folded copy
is checked against the original on that input: any mismatch, e.g. a convolution output also used elsewhere,
means the original is used unchanged.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, batch-norm name) for each BatchNorm2d fed directly by a Conv2d in a forward pass of `example`."""
    names = {m: n for n, m in model.named_modules()}
    conv_of_output: dict[int, nn.Conv2d] = {}
    pairs: list[tuple[str, str]] = []

    def after_conv(module, _inputs, output):
        conv_of_output[id(output)] = module

    def before_bn(module, inputs):
        conv = conv_of_output.get(id(inputs[0]))
        if conv is not None:
            pairs.append((names[conv], names[module]))

    handles = [m.register_forward_hook(after_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return pairs


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What a BatchNorm module does after normalising (nothing, or timm's dropout + activation); None if unknown."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if {"drop", "act"} <= set(dict(bn.named_children())):  # timm BatchNormAct2d and its relatives
        return nn.Sequential(bn.drop, bn.act)
    return None


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def folded_copy(model: nn.Module, example: torch.Tensor, tolerance: float = 1e-3) -> nn.Module:
    """An eval-mode copy of `model` with its conv -> BatchNorm pairs folded; `model` itself if nothing folds safely.

    `example` is a small input batch: it finds the pairs and checks that the copy computes what `model` does
    (relative error of the output below `tolerance`, in float32).
    """
    model = model.eval()
    pairs = [(c, b) for c, b in conv_bn_pairs(model, example)
             if _after_norm(model.get_submodule(b)) is not None and model.get_submodule(b).track_running_stats]
    if not pairs:
        return model
    folded = copy.deepcopy(model)
    for conv_name, bn_name in pairs:
        bn = folded.get_submodule(bn_name)
        _set(folded, conv_name, fuse_conv_bn_eval(folded.get_submodule(conv_name), bn))
        _set(folded, bn_name, _after_norm(bn))
    with torch.no_grad():
        expected, got = model(example).float(), folded(example).float()
    error = ((got - expected).norm() / expected.norm().clamp_min(1e-12)).item()
    if not error < tolerance:
        log.debug("BatchNorm folding changed the output (relative error %.2g): using the model as it is", error)
        return model
    return folded
