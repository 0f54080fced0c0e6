"""Audio: sound files (wav, flac, ogg, mp3) or in-memory clips, decoded to mono float at the backbone's rate.

Decoding is libsndfile (through `soundfile`) and resampling is soxr's high-quality resampler; both run in
DataLoader worker processes like image decoding. A batch is a dict of the zero-padded waveforms and their
lengths, so the backbone decides how to window, pool or mask them; clips shorter than the backbone's shortest
input (`backbone.min_samples`) are centred in silence of that length.

Memory is bounded whatever the recordings' lengths: decoding refuses recordings longer than
`max_audio_seconds()` (10 minutes unless HEADSTART_MAX_AUDIO_SECONDS says otherwise) from their header;
extraction batches hold at most MAX_BATCH_SECONDS of audio, padding included (a long clip is a batch alone);
training (fine-tuning) sees a window of at most TRAINING_CROP_SECONDS of each clip: a random one in training,
a different one each epoch, and the middle one in validation. Predictions and evaluation see the whole clip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .._util import worker_count
from ..errors import HeadstartError
from ..runtime.audio_codec import AUDIO_EXTENSIONS, MAX_BATCH_SECONDS, AudioItem, Clip, load_audio, pad_centred
from ..runtime.codec_base import expand_files
from .base import Batch, EpochShuffle, Modality, item_and_rng, item_label, register_modality, stack_labels
from .image import file_digest

# The audit's content fingerprint of a clip (`audio_fingerprint`): a 16-ms-hop log spectrogram at 8 kHz of its first
# FINGERPRINT_FRAMES frames after the silent ends are trimmed. Measured on FSDD (benchmarks/audit_audio.py).
FINGERPRINT_RATE = 8_000
FINGERPRINT_WINDOW = 256
FINGERPRINT_FRAMES = 48
FINGERPRINT_BANDS = FINGERPRINT_WINDOW // 4  # the spectrum's bins (half the window) averaged in pairs
PREFETCH_CLIPS = 8  # clips each DataLoader worker decodes ahead (one clip per worker call: no padded batches there)
# Fine-tuning's window on a longer clip (the usual practice of audio tagging: AST and PANNs train on 10 s);
# with a batch of 64 that bounds the activations kept for the backward pass.
TRAINING_CROP_SECONDS = 10.0


def augment_waveform(x: torch.Tensor, rate: int) -> torch.Tensor:
    """One random, label-preserving variation of a clip for training: gain of +-6 dB, a circular time shift of
    up to 100 ms, and with probability 0.5 white noise at 20-40 dB SNR (the usual keyword-spotting recipe)."""
    x = x * 10 ** (float(torch.empty(1).uniform_(-6, 6)) / 20)
    shift = int(torch.randint(-rate // 10, rate // 10 + 1, (1,)))
    x = torch.roll(x, shift)
    if float(torch.rand(1)) < 0.5:
        snr_db = float(torch.empty(1).uniform_(20, 40))
        power = x.pow(2).mean().clamp(min=1e-10)
        x = x + torch.randn_like(x) * (power / 10 ** (snr_db / 10)).sqrt()
    return x.clamp(-1, 1)


class AudioWaveforms(torch.utils.data.Dataset):
    """Decodes (and with `augment` varies) clips in DataLoader workers; a bad file yields an error string."""

    def __init__(self, items: Sequence[AudioItem], rate: int, labels: np.ndarray | None = None,
                 seed: int | None = None, augment: bool = False, crop_samples: int | None = None):
        self.items, self.rate, self.labels = items, int(rate), labels
        self.seed = seed  # set: keys come from EpochShuffle, and each item's augmentation is seeded by them
        self.augment = augment
        self.crop_samples = crop_samples  # longer clips: a random window with `augment`, else the middle one

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int):
        i, rng = item_and_rng(key, len(self.items), self.seed)
        label = item_label(self.labels, i)
        try:
            x = torch.from_numpy(load_audio(self.items[i], self.rate))
            with rng:
                if self.crop_samples is not None and len(x) > self.crop_samples:
                    start = (int(torch.randint(0, len(x) - self.crop_samples + 1, (1,))) if self.augment
                             else (len(x) - self.crop_samples) // 2)
                    x = x[start:start + self.crop_samples].clone()  # the clone frees the rest of the clip
                if self.augment:
                    x = augment_waveform(x, self.rate)
            return x, label, i, ""
        except Exception as e:
            return torch.zeros(0), label, i, _reason(e)


def pad_waveforms(waves: Sequence[torch.Tensor], min_samples: int) -> dict[str, torch.Tensor]:
    """{"waveform": (B, L) zero-padded, "length": (B,)}: clips shorter than `min_samples` centred in silence."""
    batch, lengths = pad_centred([w.numpy() for w in waves], min_samples)
    return {"waveform": torch.from_numpy(batch), "length": torch.from_numpy(lengths)}


class _Collate:
    """Picklable collate for workers: pad the waveforms, keep labels, indices and errors."""

    def __init__(self, min_samples: int):
        self.min_samples = min_samples

    def __call__(self, batch):
        waves, labels, idx, errors = zip(*batch)
        return (pad_waveforms(waves, self.min_samples), stack_labels(labels), torch.tensor(idx), list(errors))


class _TrainingCollate(_Collate):
    def __call__(self, batch):
        inputs, labels, _, _ = super().__call__(batch)
        return inputs, labels


def audio_fingerprint(samples: np.ndarray) -> np.ndarray:
    """A unit vector that a clip's copies share, whatever their file format, rate, gain or leading silence: the
    clip (at FINGERPRINT_RATE) from where a 5-ms envelope first reaches a tenth of its peak to where it last does,
    its log magnitude spectrogram (FINGERPRINT_WINDOW-sample Hann windows, half overlapping; bins in pairs), each
    frequency's mean over time removed (which cancels gain and the channel's colour), the first FINGERPRINT_FRAMES
    frames, zero-padded: 3,072 numbers. A silent clip gives a zero row, which matches nothing. Hand-written because
    no dependency compares short clips (Chromaprint needs its own binary and seconds of music), and embeddings alone
    cannot tell a copy from another take: a speech embedding puts FSDD's distinct recordings of one digit by one
    speaker up to 0.974 apart, and a copy with 30 ms of silence in front as low as 0.78 (benchmarks/audit_audio.py)."""
    window, hop, frames = FINGERPRINT_WINDOW, FINGERPRINT_WINDOW // 2, FINGERPRINT_FRAMES
    out = np.zeros((frames, FINGERPRINT_BANDS), dtype=np.float32)
    x = np.asarray(samples, dtype=np.float32)
    smooth = min(FINGERPRINT_RATE // 200, len(x))
    envelope = np.convolve(np.abs(x), np.ones(smooth, dtype=np.float32) / smooth, mode="same") if smooth else x
    if not x.size or envelope.max() <= 0:
        return out.ravel()
    loud = np.flatnonzero(envelope >= 0.1 * envelope.max())
    x = x[loud[0]: loud[-1] + 1]
    x = np.pad(x, (0, max(0, window - len(x))))
    starts = hop * np.arange(min(frames, 1 + (len(x) - window) // hop))
    magnitude = np.abs(np.fft.rfft(x[starts[:, None] + np.arange(window)] * np.hanning(window), axis=1))
    magnitude = magnitude[:, :window // 2].reshape(len(starts), FINGERPRINT_BANDS, 2).mean(axis=2)
    spectrum = np.log1p(magnitude / (magnitude.mean() + 1e-9))
    out[:len(spectrum)] = spectrum - spectrum.mean(axis=0, keepdims=True)
    row = out.ravel()
    row -= row.mean()
    return row / max(float(np.linalg.norm(row)), 1e-12)


@register_modality
class AudioModality(Modality):
    name = "audio"
    torchscript_exports = False
    noun = "recording"
    unit = "clip"
    file_extensions = AUDIO_EXTENSIONS
    suggested_backbone = "speech_embedding"
    default_batch_size = 64
    content_fingerprint_note = "the log spectrogram of the clip with its silent ends trimmed"
    # A speech embedding puts distinct takes of one word by one speaker close: on FSDD, at 0.9 42% of the clips had
    # such a "duplicate", at most 0.974 apart, while copies resampled or re-saved score at least 0.998
    # (benchmarks/audit_audio.py, RESULTS.md "Issue 24, twelfth round").
    near_duplicate_threshold = 0.99

    def content_fingerprints(self, items: Sequence) -> np.ndarray:
        """`audio_fingerprint` of each clip (a zero row for one that cannot be decoded: the embedding pass reports
        it)."""
        rows = np.zeros((len(items), FINGERPRINT_FRAMES * FINGERPRINT_BANDS), dtype=np.float32)
        for i, item in enumerate(items):
            try:
                rows[i] = audio_fingerprint(load_audio(item, FINGERPRINT_RATE))
            except Exception:  # unreadable: reported by the embedding pass, not here
                continue
        return rows

    def preview_html(self, item: Any, rate: int = 16_000, seconds: float = 10.0) -> str:
        """A player with the clip inline as base64 16-bit WAV (at most `seconds`)."""
        import base64
        import html
        import io

        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, load_audio(item, rate)[: int(rate * seconds)], rate, format="WAV", subtype="PCM_16")
        return (f'<audio controls preload="none" title="{html.escape(str(item))}" '
                f'src="data:audio/wav;base64,{base64.b64encode(buffer.getvalue()).decode()}"></audio>')

    def digest(self, item: AudioItem) -> bytes:
        if isinstance(item, Clip):
            h = hashlib.blake2b(digest_size=16)
            h.update(f"{item.rate}:{item.samples.dtype}:{item.samples.shape}".encode())
            h.update(np.ascontiguousarray(item.samples).tobytes())
            return h.digest()
        return file_digest(item)

    def extraction_batches(self, backbone: Any, items: Sequence, batch_size: int) -> Iterator[Batch]:
        """Clips decoded one by one in workers, batched here: at most `batch_size` clips and MAX_BATCH_SECONDS of
        padded audio a batch, so a folder of long recordings never makes a batch of 64 of them."""
        workers = worker_count() if len(items) > batch_size else 0  # one batch: no worker start-up
        loader = torch.utils.data.DataLoader(AudioWaveforms(items, backbone.sample_rate), batch_size=None,
                                             num_workers=workers, prefetch_factor=PREFETCH_CLIPS if workers else None)
        most = int(MAX_BATCH_SECONDS * backbone.sample_rate)
        pending: list[tuple[torch.Tensor, int, str]] = []
        longest = 0
        for x, _, i, error in loader:
            length = max(len(x), backbone.min_samples)
            if pending and (len(pending) == batch_size or (len(pending) + 1) * max(longest, length) > most):
                yield self._extraction_batch(pending, backbone.min_samples)
                pending, longest = [], 0
            pending.append((x, int(i), error))
            longest = max(longest, length)
        if pending:
            yield self._extraction_batch(pending, backbone.min_samples)

    @staticmethod
    def _extraction_batch(clips: list[tuple[torch.Tensor, int, str]], min_samples: int) -> Batch:
        failed = [(i, error) for _, i, error in clips if error]
        return pad_waveforms([x for x, _, _ in clips], min_samples), np.array([i for _, i, _ in clips]), failed

    def training_loader(self, backbone: Any, items: Sequence, labels: np.ndarray, batch_size: int, train: bool,
                        seed: int = 0) -> Any:
        dataset = AudioWaveforms(items, backbone.sample_rate, labels, seed=seed if train else None, augment=train,
                                 crop_samples=max(int(TRAINING_CROP_SECONDS * backbone.sample_rate),
                                                  backbone.min_samples))
        workers = worker_count()
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                           persistent_workers=workers > 0,
                                           sampler=EpochShuffle(len(items), seed) if train else None,
                                           collate_fn=_TrainingCollate(backbone.min_samples))

    def find_unreadable(self, items: Sequence) -> list[tuple[int, str]]:
        """Decode every recording (at its own rate: no resampling needed to know it is readable)."""
        loader = torch.utils.data.DataLoader(_Readability(items), batch_size=64, num_workers=worker_count(),
                                             collate_fn=lambda b: b)
        return [(i, err) for batch in loader for i, err in batch if err]

    def expand_input(self, raw: str) -> list:
        return expand_files(raw, self.file_extensions, "audio", "an audio model takes sound files or folders",
                            check=self.refuse_other_modality)


class _Readability(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[AudioItem]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, str]:
        item = self.items[i]
        try:
            load_audio(item, None)  # every check of decoding, without resampling
            return i, ""
        except Exception as e:
            return i, _reason(e)


def _reason(e: Exception) -> str:
    """Our own errors (ValueError, a recording too long) already say what is wrong; others are named by type."""
    return str(e) if isinstance(e, (ValueError, HeadstartError)) else f"{type(e).__name__}: {e}"
