"""Image backbones from timm: any `timm:<name>`, weights from a local file, the Hugging Face cache or the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from ..weights import is_pickle_refusal
from .base import ImageBackbone
from .registry import BackboneOptions, register_backbone, register_family


def _create(arch: str, **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(arch.split(".")[0]):
        raise BackboneError(f"unknown timm model '{arch}': see `timm.list_models()` for names")
    return timm.create_model(arch, num_classes=0, **kwargs)


@register_family("timm")
class TimmBackbone(ImageBackbone):
    """A timm model with its classifier removed; embeddings are its globally pooled features."""

    def __init__(self, arch: str, model: nn.Module, image_size: int | None = None, source: str = "",
                 create_kwargs: dict[str, Any] | None = None):
        cfg = model.pretrained_cfg
        super().__init__(image_size if image_size is not None else cfg["input_size"][-1], cfg["mean"], cfg["std"],
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
            try:
                model = _create(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
            except BackboneError:
                raise
            except Exception as e:
                if is_pickle_refusal(e):
                    raise BackboneError(f"--weights {path} needs pickle to load beyond plain tensors, and headstart "
                                        "never unpickles: give a .safetensors file or a plain state dict") from None
                raise BackboneError(f"--weights {path} are not {arch} weights ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:160] if str(e) else 'unreadable'})") from None
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

    def explain_layer(self) -> nn.Module:
        """The map the head reads: the last module before timm's global pooling (an EfficientNet's 1x1 conv_head
        and its norm, `bn2`; a ResNet's `layer4`), Grad-CAM's "last convolutional layer". Falls back to the last
        stage in timm's `feature_info` for models whose pooling lives inside their head."""
        children = list(self.model.named_children())
        names = [name for name, _ in children]
        if "global_pool" in names and names.index("global_pool") > 0:
            return children[names.index("global_pool") - 1][1]
        return self.model.get_submodule(self.model.feature_info[-1]["module"])

    def lora_targets(self) -> list[str]:
        """Every linear layer (attention and MLP of a vision transformer); in a CNN without any, every
        pointwise (1x1, ungrouped) convolution, the layers that hold most of an inverted-residual network's
        weights. Depthwise convolutions are left alone: PEFT's LoRA does not take grouped convolutions."""
        linear = [f"model.{n}" for n, m in self.model.named_modules() if isinstance(m, nn.Linear)]
        if linear:
            return linear
        return [f"model.{n}" for n, m in self.model.named_modules()
                if isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size == (1, 1)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


@register_backbone("timm:", modality="image", description="any timm model, e.g. timm:resnet18.a1_in1k",
                   available=lambda: (False, "HF cache or hub; --weights PATH for a local file"))
def timm_model(arch: str, options: BackboneOptions) -> TimmBackbone:
    return TimmBackbone.create(arch, options.pretrained, options.weights, options.image_size)
