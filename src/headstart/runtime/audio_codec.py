"""Recordings for an exported graph, and the decoding training uses too: libsndfile through `soundfile`, soxr
for resampling, numpy for batching; no torch."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import DataError, InputTooLarge, SettingsError
from .codec_base import InputCodec, expand_files, register_codec, validate_preprocessing
from .members import StoredItem

# What libsndfile decodes (mp3 since libsndfile 1.1; the wheels of soundfile >= 0.12 bundle it).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})


@dataclass(frozen=True)
class Clip:
    """An in-memory recording: float samples in [-1, 1] (mono, or channels last) at `rate` Hz."""

    samples: np.ndarray
    rate: int

    def __str__(self) -> str:
        return f"<clip of {len(self.samples) / self.rate:.2f} s at {self.rate} Hz>"


AudioItem = Path | Clip | StoredItem  # a file, samples in memory, or a file's bytes inside a tar shard / Parquet


# The longest recording headstart decodes, in every path (fit, predict, evaluate, the exported runtime, serve):
# longer ones are refused from their header before any sample is read, with a one-line error, so that memory is
# bounded by this and not by whatever file arrives. 10 minutes: a mono float32 waveform of 38 MB at 16 kHz, about
# 0.7 GB at the peak of the audio smallcnn (which has no windowing; an hour peaked at 4.2 GB, over 6 GB in ONNX
# Runtime). HEADSTART_MAX_AUDIO_SECONDS changes it; `headstart serve --max-audio-seconds` for the server.
MAX_AUDIO_SECONDS = 600.0
MAX_AUDIO_SECONDS_ENV = "HEADSTART_MAX_AUDIO_SECONDS"
MAX_SAMPLE_RATE = 384_000  # the highest rate studio audio uses; higher is not a recording we take
BLOCK_FRAMES = 1 << 16
# A batch's size x its longest clip, at most (extraction and the exported graph): 64 clips of 5 s, 10 of 32 s,
# or one clip of any length alone. The audio smallcnn's activations take about 1.2 MB per second in a batch.
MAX_BATCH_SECONDS = 320.0  # read and mixed to mono block by block: never all channels of the file at once


def max_audio_seconds() -> float:
    """The longest recording decoded: HEADSTART_MAX_AUDIO_SECONDS when set, else MAX_AUDIO_SECONDS."""
    raw = os.environ.get(MAX_AUDIO_SECONDS_ENV, "").strip()
    if not raw:
        return MAX_AUDIO_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise SettingsError(f"{MAX_AUDIO_SECONDS_ENV}={raw!r}: give a positive number of seconds")
    return value


def too_long(seconds: float, limit: float, setting: str) -> InputTooLarge:
    return InputTooLarge(f"the recording is {seconds:,.1f} s long; the longest taken is {limit:,g} s "
                         f"({setting} sets it)")


def read_sound(source: Any, max_seconds: float | None = None, setting: str = MAX_AUDIO_SECONDS_ENV
               ) -> tuple[np.ndarray, int]:
    """Mono float32 samples (channels averaged) and the rate of a file path or file object; ValueError if
    unreadable, InputTooLarge (naming `setting`) if longer than `max_seconds` (default: `max_audio_seconds()`).

    The length is checked from the header before decoding, and again while reading (a header may lie or not
    know), block by block, so a long or many-channel file never sits in memory whole.
    """
    import soundfile

    limit = max_audio_seconds() if max_seconds is None else float(max_seconds)
    try:
        with soundfile.SoundFile(source) as f:
            rate = int(f.samplerate)
            if not 0 < rate <= MAX_SAMPLE_RATE:
                raise ValueError(f"a sample rate of {rate:,} Hz is not one we take (at most {MAX_SAMPLE_RATE:,})")
            most = int(limit * rate)
            if f.frames > most:
                raise too_long(f.frames / rate, limit, setting)
            blocks, total = [], 0
            while True:
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if not len(block):
                    break
                total += len(block)
                if total > most:
                    raise too_long(total / rate, limit, setting)
                blocks.append(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy())
    except soundfile.LibsndfileError as e:
        raise ValueError(f"not a readable sound file ({e.error_string})") from None
    except RuntimeError as e:  # soundfile's other errors (a file object it cannot read)
        raise ValueError(f"not a readable sound file ({e})") from None
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return samples, rate


def load_audio(item: AudioItem, rate: int | None, max_seconds: float | None = None) -> np.ndarray:
    """Decode to mono float32 at `rate` Hz (None: the recording's own rate): channels are averaged, other rates
    resampled with soxr (HQ).

    Raises ValueError with the reason for anything that is not usable sound: not audio, an empty signal,
    NaN or infinite samples; InputTooLarge past `max_seconds` (default `max_audio_seconds()`), checked before
    decoding.
    """
    limit = max_audio_seconds() if max_seconds is None else float(max_seconds)
    if isinstance(item, Clip):
        samples, source_rate = np.asarray(item.samples, dtype=np.float32), int(item.rate)
        if len(samples) > limit * source_rate:
            raise too_long(len(samples) / source_rate, limit, MAX_AUDIO_SECONDS_ENV)
    else:
        samples, source_rate = read_sound(item.open() if isinstance(item, StoredItem) else str(item), limit)
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
        """An uploaded recording, decoded and checked now (so a bad file is a 400 naming it, not a failed batch),
        as mono at the model's rate (what `prepare` makes of it anyway: the smallest thing to hold). Longer than
        `decode_limits.max_audio_seconds`: InputTooLarge from the header, before decoding."""
        name = filename or "the file"
        if not data:
            raise DataError(f"{name} is empty")
        limits = self.decode_limits
        try:
            samples, rate = read_sound(io.BytesIO(data), limits.max_audio_seconds, limits.audio_setting)
            return Clip(load_audio(Clip(samples, rate), self.rate, limits.max_audio_seconds), self.rate)
        except ValueError as e:
            raise DataError(f"{name} cannot be decoded as audio ({e})") from None

    def decoded_bytes(self, item: Any) -> int:
        return int(item.samples.nbytes) if isinstance(item, Clip) else 0

    def expand_input(self, raw: str) -> list:
        return expand_files(raw, AUDIO_EXTENSIONS, "audio", "an audio model takes sound files or folders")

    def prepare(self, item: Any) -> np.ndarray:
        return load_audio(item, self.rate)

    def sort_key(self, item: Any) -> int:
        return len(item) if isinstance(item, np.ndarray) else 0

    def batch_ends(self, prepared: Sequence[np.ndarray], batch_size: int) -> list[int]:
        """At most `batch_size` clips and MAX_BATCH_SECONDS of padded audio a graph call."""
        most, shortest = int(MAX_BATCH_SECONDS * self.rate), int(self.preprocessing["min_samples"])
        ends, start, longest = [], 0, 0
        for i, clip in enumerate(prepared):
            length = max(len(clip), shortest)
            if i > start and (i - start == batch_size or (i - start + 1) * max(longest, length) > most):
                ends.append(i)
                start, longest = i, 0
            longest = max(longest, length)
        return [*ends, len(prepared)] if prepared else []

    def feeds(self, prepared: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        waveform, length = pad_centred(prepared, int(self.preprocessing["min_samples"]))
        return {"waveform": waveform, "length": length}
