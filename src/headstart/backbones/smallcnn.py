"""`smallcnn`: a small convolutional network trained from scratch, the no-transfer baseline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArtifactError, BackboneError
from ..weights import load_weights
from .base import ImageBackbone
from .registry import BackboneOptions, register_backbone, register_family


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@register_family("smallcnn")
class SmallCNN(ImageBackbone):
    """Three conv blocks (VGG-style pairs of 3x3 convolutions) and global average pooling."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128), image_size: int = 32):
        super().__init__(image_size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        self.channels = tuple(int(c) for c in channels)
        widths = (3, *self.channels)
        self.blocks = nn.ModuleList(_block(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding_dim = self.channels[-1]
        self.is_pretrained = False

    @property
    def spec(self) -> dict[str, Any]:
        return {"family": "smallcnn", "channels": list(self.channels), **self.preprocessing}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], model_dir: Path) -> SmallCNN:
        return cls(spec["channels"], spec["image_size"])

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(b.parameters()) for b in self.blocks]

    def explain_layer(self) -> nn.Module:
        return self.blocks[-1]  # the last conv block: the finest map that still sees whole objects

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for block in self.blocks:
            x = block(x)
        return self.pool(x).flatten(1)


def with_weights(net: nn.Module, weights: str | None) -> nn.Module:
    """`net` as built (random), or loaded from a safetensors file of exactly its tensors (pretrained elsewhere)."""
    if weights is not None:
        try:
            load_weights(net, Path(weights).expanduser())
        except ArtifactError as e:
            raise BackboneError(f"--weights {weights}: {e} (smallcnn takes a safetensors file of its own "
                                "tensors; a folder written by `headstart pretrain` goes to --backbone)") from None
        net.is_pretrained = True
    return net


@register_backbone("smallcnn", modality="image", description="small CNN trained from scratch (no transfer baseline)")
def smallcnn(_: str, options: BackboneOptions) -> SmallCNN:
    """Random weights, or with `weights` a safetensors file of exactly its tensors (e.g. pretrained elsewhere)."""
    return with_weights(SmallCNN(image_size=options.image_size or 32), options.weights)
