"""`masked`: masked image modelling: hide random patches, predict their pixels from the embedding.

Follows SimMIM, Xie et al., "SimMIM: a simple framework for masked image modeling" (CVPR 2022): random square
patches masked at a high ratio, raw (normalised) pixels as targets, an L1 loss on the masked pixels only. Two
departures keep it backbone-agnostic (CNNs included): masked patches are filled with the normalisation mean
(0) in pixel space instead of a learned token at the patch embedding, and the prediction comes from the pooled
embedding through a small convolutional decoder (the representation `fit` later uses), as in the context
encoders of Pathak et al. (CVPR 2016).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..backbones.base import ImageBackbone
from .base import ConvDecoder, ImageObjective, register_objective


def random_patch_mask(batch: int, image_size: int | tuple[int, int], patch: int, ratio: float,
                      device=None) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 where hidden: exactly round(ratio * patches) random patches per image
    (`image_size`: S for a square, or (H, W))."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    n = rows * cols
    k = max(1, min(n - 1, round(ratio * n)))
    order = torch.rand(batch, n, device=device).argsort(dim=1)
    mask = torch.zeros(batch, n, device=device)
    mask.scatter_(1, order[:, :k], 1.0)
    mask = mask.view(batch, 1, rows, cols)
    mask = mask.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return mask[..., :height, :width]


@register_objective
class MaskedImageModelling(ImageObjective):
    name = "masked"
    paper = "SimMIM, Xie et al. 2022 (pixel-space masking and a decoder from the pooled embedding)"
    default_lr = 1e-3

    uses_options = ("mask_ratio",)

    def __init__(self, backbone: ImageBackbone, grayscale: bool = False, mask_ratio: float = 0.5,
                 patch_size: int | None = None):
        super().__init__(backbone, grayscale)
        size = backbone.image_size
        self.mask_ratio = float(mask_ratio)
        self.patch_size = int(patch_size or max(2, size // 8))  # an 8x8 grid of patches by default
        self.decoder = ConvDecoder(backbone.embedding_dim, size)
        self.options = {"mask_ratio": self.mask_ratio, "patch_size": self.patch_size}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mask = random_patch_mask(len(x), x.shape[-1], self.patch_size, self.mask_ratio, x.device).to(x.dtype)
        prediction = self.decoder(self.backbone(x * (1 - mask)))
        error = nn.functional.l1_loss(prediction.float(), x.float(), reduction="none") * mask.float()
        return error.sum() / (mask.float().sum() * x.shape[1]).clamp(min=1.0)
