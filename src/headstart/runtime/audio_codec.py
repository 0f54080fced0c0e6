"""Recordings for an exported graph, and the decoding training uses too: libsndfile through `soundfile`, soxr
for resampling, numpy for batching; no torch."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import DataError
from .codec_base import InputCodec, expand_files, register_codec, validate_preprocessing

# What libsndfile decodes (mp3 since libsndfile 1.1; the wheels of soundfile >= 0.12 bundle it).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})


@dataclass(frozen=True)
class Clip:
    """An in-memory recording: float samples in [-1, 1] (mono, or channels last) at `rate` Hz."""

    samples: np.ndarray
    rate: int

    def __str__(self) -> str:
        return f"<clip of {len(self.samples) / self.rate:.2f} s at {self.rate} Hz>"


AudioItem = Path | Clip


def read_sound(source: Any) -> tuple[np.ndarray, int]:
    """Samples (frames, channels) as float32 and the rate of a file path or file object; ValueError if unreadable."""
    import soundfile

    try:
        return soundfile.read(source, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as e:
        raise ValueError(f"not a readable sound file ({e.error_string})") from None


def load_audio(item: AudioItem, rate: int | None) -> np.ndarray:
    """Decode to mono float32 at `rate` Hz (None: the recording's own rate): channels are averaged, other rates
    resampled with soxr (HQ).

    Raises ValueError with the reason for anything that is not usable sound: not audio, an empty signal,
    NaN or infinite samples.
    """
    if isinstance(item, Clip):
        samples, source_rate = np.asarray(item.samples, dtype=np.float32), int(item.rate)
    else:
        samples, source_rate = read_sound(str(item))
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise ValueError("the recording has no samples")
    if not np.isfinite(samples).all():
        raise ValueError("the recording holds NaN or infinite samples")
    if rate is not None and source_rate != rate:
        import soxr

        samples = soxr.resample(samples, source_rate, rate, quality="HQ").astype(np.float32, copy=False)
    return samples


def pad_centred(waves: Sequence[np.ndarray], min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, L) zero-padded batch and (B,) lengths; clips shorter than `min_samples` centred in silence."""
    lengths = np.array([max(len(w), min_samples) for w in waves], dtype=np.int64)
    batch = np.zeros((len(waves), int(lengths.max()) if len(waves) else min_samples), np.float32)
    for row, w in zip(batch, waves):
        left = (min_samples - len(w)) // 2 if len(w) < min_samples else 0
        row[left:left + len(w)] = w
    return batch, lengths


class AudioPreprocessing(BaseModel):
    """What the audio codec reads from the sidecar, checked at load."""

    model_config = ConfigDict(extra="allow", strict=True)

    sample_rate: int = Field(ge=1)
    min_samples: int = Field(ge=1)


@register_codec
class AudioCodec(InputCodec):
    modality = "audio"
    takes_uploads = True
    raw_media_type = "audio/*"

    @property
    def rate(self) -> int:
        return int(self.preprocessing["sample_rate"])

    def check_preprocessing(self) -> None:
        validate_preprocessing(AudioPreprocessing, self.preprocessing)

    def input_names(self) -> list[str]:
        return ["waveform", "length"]

    def decode_upload(self, data: bytes, filename: str) -> Clip:
        """An uploaded recording, decoded and checked now (so a bad file is a 400 naming it, not a failed batch)."""
        name = filename or "the file"
        if not data:
            raise DataError(f"{name} is empty")
        try:
            samples, rate = read_sound(io.BytesIO(data))
            clip = Clip(samples, rate)
            load_audio(clip, rate)
        except ValueError as e:
            raise DataError(f"{name} cannot be decoded as audio ({e})") from None
        return clip

    def expand_input(self, raw: str) -> list:
        return expand_files(raw, AUDIO_EXTENSIONS, "audio", "an audio model takes sound files or folders")

    def prepare(self, item: Any) -> np.ndarray:
        return load_audio(item, self.rate)

    def feeds(self, prepared: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        waveform, length = pad_centred(prepared, int(self.preprocessing["min_samples"]))
        return {"waveform": waveform, "length": length}
