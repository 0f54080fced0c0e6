"""What the audio objectives share: one-second crops decoded in workers, and augmentations that suit sound.

They train backbones that see sound as a log-mel image (`spectrogram(batch)` then `encode(spec, frames)`, as
`smallcnn` for audio does), so that masking and spectrogram augmentation act on the model's own input.
"""

from __future__ import annotations

from typing import Any

import torch

from ..backbones.base import Backbone
from ..data.unlabeled import UnlabeledData
from ..errors import BackboneError
from ..modalities.audio import load_audio
from .base import Objective, ObjectiveOptions

CROP_SECONDS = 1.0


class AudioCrops(torch.utils.data.Dataset):
    """A random `samples`-long crop of each clip (centred in silence when shorter); `views=2` gives two crops of
    the same clip at independent offsets."""

    def __init__(self, items, rate: int, samples: int, views: int = 1):
        self.items, self.rate, self.samples, self.views = items, rate, samples, views

    def __len__(self) -> int:
        return len(self.items)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) <= self.samples:
            left = (self.samples - len(x)) // 2
            return torch.nn.functional.pad(x, (left, self.samples - len(x) - left))
        start = int(torch.randint(0, len(x) - self.samples + 1, (1,)))
        return x[start:start + self.samples]

    def __getitem__(self, i: int):
        x = torch.from_numpy(load_audio(self.items[i], self.rate))  # unreadable clips were left out before
        crops = [self._crop(x) for _ in range(self.views)]
        return crops[0] if self.views == 1 else torch.stack(crops)


def random_gain_and_noise(x: torch.Tensor, max_gain_db: float = 6.0, snr_db: tuple[float, float] = (10.0, 30.0),
                          p_noise: float = 0.5) -> torch.Tensor:
    """Per clip of a (B, L) batch: a gain of +-`max_gain_db`, and with probability `p_noise` white noise at an SNR
    drawn from `snr_db`."""
    b = len(x)
    gain = 10 ** (torch.empty(b, 1, device=x.device).uniform_(-max_gain_db, max_gain_db) / 20)
    x = x * gain
    snr = torch.empty(b, 1, device=x.device).uniform_(*snr_db)
    power = x.pow(2).mean(1, keepdim=True).clamp(min=1e-10)
    noisy = (torch.rand(b, 1, device=x.device) < p_noise).to(x.dtype)
    return x + noisy * torch.randn_like(x) * (power / 10 ** (snr / 10)).sqrt()


def spec_augment(spec: torch.Tensor, freq_masks: int = 2, max_freq: int = 8, time_masks: int = 2,
                 max_time: int = 10) -> torch.Tensor:
    """SpecAugment's masking (Park et al. 2019) on (B, 1, F, T) normalised spectrograms: bands and frame spans
    set to 0, the per-clip mean. (No time warping, which the paper found to matter least.)"""
    b, _, n_freq, n_time = spec.shape
    keep = torch.ones(b, 1, n_freq, n_time, device=spec.device, dtype=spec.dtype)
    for axis, count, widest, size in ((2, freq_masks, max_freq, n_freq), (3, time_masks, max_time, n_time)):
        for _ in range(count):
            width = torch.randint(0, widest + 1, (b, 1, 1, 1), device=spec.device)
            start = (torch.rand(b, 1, 1, 1, device=spec.device) * (size - width + 1)).long()
            pos = torch.arange(size, device=spec.device).view(*([1, 1, -1, 1] if axis == 2 else [1, 1, 1, -1]))
            keep = keep * ~((pos >= start) & (pos < start + width))
    return spec * keep


class AudioObjective(Objective):
    """Audio objectives: fixed one-second crops decoded in DataLoader workers; a spectrogram backbone."""

    modality = "audio"
    decode_in_workers = True
    views = 1
    uses_options: tuple[str, ...] = ()  # the ObjectiveOptions fields passed to the constructor

    @classmethod
    def create(cls, backbone: Backbone, data: UnlabeledData, options: ObjectiveOptions) -> AudioObjective:
        if not (hasattr(backbone, "spectrogram") and hasattr(backbone, "encode")):
            raise BackboneError(f"objective '{cls.name}' trains backbones that take log-mel spectrograms, such as "
                                f"smallcnn; {type(backbone).__name__} does not")
        return cls(backbone, **{name: getattr(options, name) for name in cls.uses_options})

    def crop_samples(self) -> int:
        return int(CROP_SECONDS * self.backbone.sample_rate)

    def dataset(self, data: UnlabeledData) -> torch.utils.data.Dataset:
        return AudioCrops(data.items, self.backbone.sample_rate, self.crop_samples(), self.views)

    def batch_of(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"waveform": waveforms, "length": torch.full((len(waveforms),), waveforms.shape[-1],
                                                            device=waveforms.device)}

    def collate(self, batch: list) -> Any:
        return torch.stack(batch)
