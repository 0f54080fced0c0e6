"""`contrastive` for audio: SimCLR's NT-Xent (Chen et al. 2020) with the positives of COLA, Saeed et al.,
"Contrastive learning of general-purpose audio representations" (ICASSP 2021): two crops of the same clip at
different offsets are a positive pair, the other clips of the batch are negatives.

Departures: each crop is also varied by gain, white noise and SpecAugment masks (COLA uses crops alone), and
the loss is SimCLR's normalised-temperature cross entropy with a projection head rather than COLA's bilinear
similarity, so image and audio contrastive pretraining share one loss (contrastive.py).
"""

from __future__ import annotations

import torch

from ..backbones.base import Backbone
from .audio_base import AudioObjective, random_gain_and_noise, spec_augment
from .base import register_objective
from .contrastive import SimCLRProjectionHead, nt_xent


@register_objective
class AudioContrastive(AudioObjective):
    name = "contrastive"
    paper = "COLA, Saeed et al. 2021 (crops of one clip as positives), with SimCLR's NT-Xent and projection head"
    default_lr = 1e-3
    default_batch_size = 256  # negatives come from the batch
    views = 2
    uses_options = ("temperature",)

    def __init__(self, backbone: Backbone, temperature: float = 0.5, projection_dim: int = 128):
        super().__init__(backbone)
        self.temperature = float(temperature)
        self.projection = SimCLRProjectionHead(backbone.embedding_dim, out=projection_dim)
        self.options = {"temperature": self.temperature, "projection_dim": projection_dim,
                        "augmentation": "two crops + gain, noise, SpecAugment masks"}

    def loss(self, crops: torch.Tensor) -> torch.Tensor:
        n = len(crops)
        waves = random_gain_and_noise(torch.cat([crops[:, 0], crops[:, 1]]))
        spec, frames = self.backbone.spectrogram(self.batch_of(waves))
        z = self.projection(self.backbone.encode(spec_augment(spec), frames))  # one pass: BatchNorm sees both views
        return nt_xent(z[:n], z[n:], self.temperature)
