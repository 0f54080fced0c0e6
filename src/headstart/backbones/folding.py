"""Inference copies of image backbones with each BatchNorm folded into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel affine map, so it can be merged into the weights and bias of the
convolution before it. On CPU that removes a whole pass over every feature map: batch norm was 30% of
EfficientNet-Lite0's extraction time in the profile (benchmarks/RESULTS.md).

Written by hand because no library covers our backbones: `torch.fx.experimental.optimization.fuse` needs a
traceable model whose BatchNorms are plain `nn.BatchNorm2d` leaves, and `torch.ao.quantization.fuse_modules`
needs the pairs by name and exact types; timm's `BatchNormAct2d` (BN + dropout + activation in one module) fits
neither. The arithmetic is PyTorch's own `fuse_conv_bn_eval`; only finding the pairs is ours. Pairs are found
by watching one forward pass (a BatchNorm whose input is exactly, and unmodified, a convolution's output), and
the folded copy is checked against the original on that input in float32: any mismatch, e.g. a convolution
output also used elsewhere, means the original is used unchanged. Folding is only a speed-up, so any failure
falls back to the original too.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)


def _foldable_convolutions() -> tuple[type, ...]:
    """Convolutions whose forward uses the weight as stored (not e.g. timm's weight-standardised StdConv2d)."""
    try:
        from timm.layers import Conv2dSame
    except ImportError:  # pragma: no cover - timm is a dependency
        return (nn.Conv2d,)
    return (nn.Conv2d, Conv2dSame)


def _after_norm(bn: nn.Module) -> nn.Module | None:
    """What a BatchNorm module does after normalising (nothing, or timm's dropout + activation); None if unknown."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    children = dict(bn.named_children())
    if isinstance(bn, nn.BatchNorm2d) and set(children) == {"drop", "act"}:  # timm's BatchNormAct2d
        return nn.Sequential(children["drop"], children["act"])
    return None


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """(conv name, batch-norm name) pairs where a BatchNorm2d's input is a Conv2d's untouched output, and the output.

    Modules called more than once in the pass are left out: folding a shared module would change its other uses.
    """
    names = {m: n for n, m in model.named_modules()}
    foldable = _foldable_convolutions()
    outputs: dict[int, tuple[nn.Module, torch.Tensor, int]] = {}  # tensors kept alive, so ids are not reused
    calls: Counter[nn.Module] = Counter()
    pairs: list[tuple[str, str]] = []

    def after_conv(module, _inputs, output):
        calls[module] += 1
        outputs[id(output)] = (module, output, output._version)

    def before_bn(module, inputs):
        calls[module] += 1
        conv, tensor, version = outputs.get(id(inputs[0]), (None, None, None))
        if conv is not None and tensor is inputs[0] and tensor._version == version:  # no in-place op in between
            pairs.append((names[conv], names[module]))

    handles = [m.register_forward_hook(after_conv) for m in model.modules() if type(m) in foldable]
    handles += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            output = model(example)
    finally:
        for h in handles:
            h.remove()
    once = {names[m] for m, n in calls.items() if n == 1}
    return [(c, b) for c, b in pairs if c in once and b in once], output


def folded_copy(model: nn.Module, example: torch.Tensor, tolerance: float = 1e-4) -> nn.Module:
    """An eval-mode copy of `model` with its conv -> BatchNorm pairs folded; `model` itself if nothing folds safely.

    Puts `model` in eval mode. `example` is a small float32 input batch: it finds the pairs and checks that the
    copy computes what `model` does (relative error of the output below `tolerance`).
    """
    model.eval()
    try:
        # Exact float32 for the comparison: TF32 convolutions on GPUs would blur a 1e-4 check.
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            return _fold_and_check(model, example, tolerance)
    except Exception as error:  # a speed-up only: never let it break extraction
        log.info("BatchNorm folding skipped (%s: %s)", type(error).__name__, error)
        return model


def _fold_and_check(model: nn.Module, example: torch.Tensor, tolerance: float) -> nn.Module:
    pairs, expected = conv_bn_pairs(model, example)
    pairs = [(c, b) for c, b in pairs
             if _after_norm(model.get_submodule(b)) is not None and model.get_submodule(b).track_running_stats]
    if not pairs:
        return model
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            bn = folded.get_submodule(bn_name)
            _replace(folded, conv_name, fuse_conv_bn_eval(folded.get_submodule(conv_name), bn))
            _replace(folded, bn_name, _after_norm(bn))
        expected, got = expected.float(), folded(example).float()
    error = ((got - expected).norm() / expected.norm().clamp_min(1e-12)).item()
    if not error < tolerance:
        log.info("BatchNorm folding would change the output (relative error %.2g): using the model as it is", error)
        return model
    return folded


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
