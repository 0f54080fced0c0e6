"""`autoencoder`: reconstruct the image from its embedding, optionally from a noise-corrupted input.

Follows Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks" (Science 2006):
encoder f (the backbone, whose pooled embedding is the code), decoder g, loss mean_i (x_i - g(f(x))_i)^2 over
normalised pixels (the sum of squares up to a constant). With `denoise`, the denoising autoencoder of Vincent et
al., "Extracting and composing robust features with denoising autoencoders" (ICML 2008): the encoder sees
x + Gaussian noise and the decoder must return the clean x.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones.base import ImageBackbone
from .base import ConvDecoder, ImageObjective, register_objective


@register_objective
class Autoencoder(ImageObjective):
    name = "autoencoder"
    paper = "Hinton & Salakhutdinov 2006; denoising: Vincent et al. 2008"
    default_lr = 1e-3

    uses_options = ("denoise",)

    def __init__(self, backbone: ImageBackbone, grayscale: bool = False, denoise: bool = False,
                 noise_std: float = 0.2):
        super().__init__(backbone, grayscale)
        self.decoder = ConvDecoder(backbone.embedding_dim, backbone.image_size)
        self.denoise = bool(denoise)
        self.noise_std = float(noise_std)  # in pixel units of the [0, 1] scale
        self.options = {"denoise": self.denoise, **({"noise_std": self.noise_std} if self.denoise else {})}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x
        if self.denoise:
            noise = torch.randn_like(x) * self.normalize_pixels(torch.full((1, x.shape[1], 1, 1), self.noise_std,
                                                                           device=x.device))
            inputs = x + noise
        reconstruction = self.decoder(self.backbone(inputs))
        return nn.functional.mse_loss(reconstruction.float(), x.float())
