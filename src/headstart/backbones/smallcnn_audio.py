"""`smallcnn` for audio: the same small CNN as for images, on log-mel spectrograms, trained from scratch (the
no-transfer baseline), or pretrained on unlabeled audio by `headstart pretrain`.

Log-mel: 25 ms Hann windows every 10 ms (n_fft 400, hop 160 at 16 kHz), 64 Slaney mel bands from 20 Hz to
8 kHz (transformers' `mel_filter_bank`), log(power + 1e-6), normalised per clip over its own frames so that
recording level does not matter. The embedding is the average over frequency and over the clip's own frames.

No windowing: the whole clip goes through the CNN at once, so memory grows with its length (about 1.2 MB per
second of audio; an hour peaked at 4.2 GB). It is bounded outside the network: decoding refuses recordings longer
than HEADSTART_MAX_AUDIO_SECONDS (600 s by default) with a one-line error, extraction batches hold at most
MAX_BATCH_SECONDS of audio, and fine-tuning trains on windows of at most 10 s (headstart.modalities.audio).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import AudioBackbone
from .registry import BackboneOptions, register_backbone, register_family
from .smallcnn import _block, with_weights

SAMPLE_RATE, N_FFT, HOP, N_MELS = 16_000, 400, 160, 64


class LogMelSpectrogram(nn.Module):
    """(B, L) waveforms -> (B, 1, 64, T) per-clip normalised log-mel, and each clip's frame count (B,)."""

    def __init__(self):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        mel = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=20.0,
                              max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney",
                              mel_scale="slaney")
        self.register_buffer("mel", torch.tensor(mel, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, waveform: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(waveform.device.type, enabled=False):
            if waveform.shape[1] < N_FFT:
                waveform = nn.functional.pad(waveform, (0, N_FFT - waveform.shape[1]))
            spec = torch.stft(waveform.float(), N_FFT, HOP, window=self.window, center=False, return_complex=True)
            logmel = torch.log((spec.abs() ** 2).transpose(1, 2) @ self.mel + 1e-6).transpose(1, 2)  # (B, 64, T)
            frames = ((length - N_FFT).clamp(min=0) // HOP + 1).clamp(max=logmel.shape[2])
            valid = (torch.arange(logmel.shape[2], device=logmel.device)[None, :] < frames[:, None])[:, None, :]
            count = valid.sum((1, 2), keepdim=True) * N_MELS
            mean = (logmel * valid).sum((1, 2), keepdim=True) / count
            std = ((((logmel - mean) * valid) ** 2).sum((1, 2), keepdim=True) / count).sqrt().clamp(min=1e-3)
            return (((logmel - mean) / std) * valid).unsqueeze(1), frames


@register_family("smallcnn_audio")
class AudioSmallCNN(AudioBackbone):
    """Three conv blocks over the log-mel image; mean over frequency and over the clip's valid frames."""

    sample_rate = SAMPLE_RATE
    min_samples = SAMPLE_RATE  # shorter clips are centred in one second of silence

    def __init__(self, channels: Sequence[int] = (32, 64, 128)):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.frontend = LogMelSpectrogram()
        widths = (1, *self.channels)
        self.blocks = nn.ModuleList(_block(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.embedding_dim = self.channels[-1]
        self.is_pretrained = False

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS,
                "pooling": "mean over frequency and valid frames"}

    @property
    def spec(self) -> dict[str, Any]:
        return {"family": "smallcnn_audio", "channels": list(self.channels), **self.preprocessing}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], model_dir: Path) -> AudioSmallCNN:
        return cls(spec["channels"])

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(b.parameters()) for b in self.blocks]

    def inference_copy(self, device: torch.device, fold: bool = True) -> nn.Module:
        return self.eval().to(device, memory_format=torch.channels_last)

    def spectrogram(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's input image (B, 1, 64, T) and each clip's frame count."""
        return self.frontend(batch["waveform"], batch["length"])

    def encode(self, spec: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Embeddings of log-mel images: frames past a clip's own count are left out of the time average."""
        x = spec
        for block in self.blocks:
            x = block(x)
        x = x.mean(2)  # (B, C, T')
        kept = (frames * x.shape[2] // spec.shape[3]).clamp(min=1)
        valid = (torch.arange(x.shape[2], device=x.device)[None, :] < kept[:, None]).to(x.dtype)[:, None, :]
        return (x * valid).sum(2) / valid.sum(2)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(*self.spectrogram(batch))


@register_backbone("smallcnn", modality="audio",
                   description="small CNN on log-mel spectrograms, from scratch (no transfer baseline)")
def smallcnn_audio(_: str, options: BackboneOptions) -> AudioSmallCNN:
    """Random weights, or with `weights` a safetensors file of exactly its tensors."""
    return with_weights(AudioSmallCNN(), options.weights)
