"""`masked` for audio: masked spectrogram modelling. Random patches of the log-mel spectrogram are hidden and
their values predicted, as in SSAST (Gong et al., "SSAST: Self-Supervised Audio Spectrogram Transformer", AAAI
2022) and MSM-MAE (Niizumi et al. 2022).

Departures, as in the image `masked` objective (masked.py): a CNN encoder sees the spectrogram with hidden
patches set to 0 (the per-clip mean) instead of dropping patch tokens, and the prediction comes from the pooled
embedding through a small convolutional decoder; the loss is L1 on the hidden patches only (SimMIM).
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones.base import Backbone
from .audio_base import AudioObjective, random_gain_and_noise
from .base import ConvDecoder, register_objective
from .masked import random_patch_mask


@register_objective
class MaskedSpectrogramModelling(AudioObjective):
    name = "masked"
    paper = "masked spectrogram modelling, SSAST (Gong et al. 2022) / MSM-MAE, with a CNN and SimMIM's L1 loss"
    default_lr = 1e-3
    uses_options = ("mask_ratio",)

    def __init__(self, backbone: Backbone, mask_ratio: float = 0.5, patch_size: int = 8):
        super().__init__(backbone)
        self.mask_ratio = float(mask_ratio)
        self.patch_size = int(patch_size)
        spec, _ = backbone.spectrogram(self.batch_of(torch.zeros(1, self.crop_samples())))
        self.spec_size = tuple(spec.shape[-2:])
        self.decoder = ConvDecoder(backbone.embedding_dim, self.spec_size, channels=1)
        self.options = {"mask_ratio": self.mask_ratio, "patch_size": self.patch_size}

    def loss(self, crops: torch.Tensor) -> torch.Tensor:
        spec, frames = self.backbone.spectrogram(self.batch_of(random_gain_and_noise(crops)))
        mask = random_patch_mask(len(spec), self.spec_size, self.patch_size, self.mask_ratio, spec.device)
        prediction = self.decoder(self.backbone.encode(spec * (1 - mask), frames))
        error = nn.functional.l1_loss(prediction.float(), spec.float(), reduction="none") * mask
        return error.sum() / mask.sum().clamp(min=1.0)
