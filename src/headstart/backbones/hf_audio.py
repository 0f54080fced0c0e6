"""Hugging Face Transformers audio encoders (`hf:<id>` for audio data, or a local model folder): wav2vec 2.0,
HuBERT, WavLM, the Audio Spectrogram Transformer, Whisper's encoder ... through `AutoFeatureExtractor` and
`AutoModel`; the embedding is the mean of the last hidden states over each clip's own frames."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._util import inside
from ..errors import BackboneError
from .base import AudioBackbone
from .hf_layers import transformer_layer_groups
from .registry import BackboneInfo, BackboneOptions, register_backbone, register_family, register_folder_kind

CONFIG_DIR = "backbone"


def audio_model_types() -> set[str]:
    """Transformers model types that take sound (audio classification, CTC and speech-to-text heads)."""
    from transformers.models.auto import modeling_auto as auto

    return {*auto.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES, *auto.MODEL_FOR_CTC_MAPPING_NAMES,
            *auto.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES}


def is_audio_model_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (OSError, ValueError, AttributeError):
        return False
    return model_type in audio_model_types()


def _load_pretrained(location: str) -> tuple[nn.Module, Any]:
    """Model and feature extractor: a local directory, else the HF cache, else the hub; never remote code."""
    from transformers import AutoFeatureExtractor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    local = Path(location).expanduser()
    if local.is_dir() and not (local / "config.json").is_file():
        raise BackboneError(f"{local} is not a Hugging Face model directory: config.json is missing")
    attempts = [True] if local.is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    error: Exception | None = None
    for local_only in attempts:
        try:
            model = AutoModel.from_pretrained(str(local) if local.is_dir() else location, local_files_only=local_only)
            extractor = AutoFeatureExtractor.from_pretrained(str(local) if local.is_dir() else location,
                                                             local_files_only=local_only)
            return model, extractor
        except Exception as e:
            error = e
    raise BackboneError(
        f"Hugging Face audio model '{location}' is not available offline and could not be downloaded "
        f"({type(error).__name__}: {str(error).splitlines()[0][:160]}). Get it with `huggingface-cli download "
        f"{location}` on a connected machine, or pass a local model directory (config.json, the weights and "
        "preprocessor_config.json)") from error


@register_family("hf_audio")
class HFAudioBackbone(AudioBackbone):
    """A Transformers audio encoder; its feature extractor prepares each batch, the embedding is a masked mean."""

    min_samples = 8_000  # half a second at 16 kHz: wav2vec-style convolutional frontends need some length

    def __init__(self, model: nn.Module, extractor: Any, source: str = ""):
        super().__init__()
        self.model = model
        self.extractor = extractor
        self.source = source
        self.sample_rate = int(extractor.sampling_rate)
        self.min_samples = self.sample_rate // 2
        config = model.config
        self.embedding_dim = int(getattr(config, "hidden_size", None) or config.d_model)

    @classmethod
    def create(cls, location: str) -> HFAudioBackbone:
        model, extractor = _load_pretrained(location)
        return cls(model, extractor, source=location)

    @property
    def encoder(self) -> nn.Module:
        """The part that embeds sound (Whisper: the encoder of the encoder-decoder)."""
        return self.model.get_encoder() if getattr(self.model.config, "is_encoder_decoder", False) else self.model

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing, "feature_extractor": type(self.extractor).__name__,
                "pooling": "mean over the clip's frames"}

    @property
    def spec(self) -> dict[str, Any]:
        return {"family": "hf_audio", "config_dir": CONFIG_DIR, "source": self.source,
                "model_type": self.model.config.model_type, **self.preprocessing}

    def save_files(self, model_dir: Path) -> None:
        self.model.config.save_pretrained(model_dir / CONFIG_DIR)
        self.extractor.save_pretrained(model_dir / CONFIG_DIR)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], model_dir: Path) -> HFAudioBackbone:
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        folder = inside(model_dir, spec["config_dir"], "the manifest's backbone config_dir")
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
        return cls(model, AutoFeatureExtractor.from_pretrained(folder, local_files_only=True), spec.get("source", ""))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return transformer_layer_groups(self.encoder)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        waveform, length = batch["waveform"], batch["length"]
        clips = [w[: int(n)].float().cpu().numpy() for w, n in zip(waveform, length)]
        inputs = self.extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt", padding=True)
        # The attention mask goes in when the extractor makes one: Hugging Face's convention for whether a model
        # was trained with masked padding (wav2vec 2.0 large) or with zeros (wav2vec 2.0 base).
        inputs = {k: v.to(waveform.device) for k, v in inputs.items()
                  if k in ("input_values", "input_features", "attention_mask")}
        hidden = self.encoder(**inputs).last_hidden_state  # (B, T, D)
        # Each clip's share of the frames: the extractor pads to the longest clip (Whisper to 30 s).
        padded_seconds = max(float(length.max()), self._padded_samples(inputs)) / self.sample_rate
        share = (length.to(hidden.dtype) / self.sample_rate / padded_seconds).clamp(max=1)
        frames = (share * hidden.shape[1]).ceil().clamp(min=1)
        mask = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frames[:, None]).to(hidden.dtype)
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    def _padded_samples(self, inputs: dict[str, torch.Tensor]) -> float:
        """Samples the extractor's output stands for: raw `input_values` (wav2vec 2.0, HuBERT, WavLM); Whisper's
        fixed window (`n_samples`, 30 s); else spectrogram frames (B, T, bands) of 10 ms (AST)."""
        if "input_values" in inputs:
            return float(inputs["input_values"].shape[-1])
        if hasattr(self.extractor, "n_samples"):
            return float(self.extractor.n_samples)
        return float(inputs["input_features"].shape[1] * self.sample_rate // 100)


def _no_weights_file(options: BackboneOptions) -> None:
    if options.weights is not None:
        raise BackboneError(f"--weights {options.weights}: Hugging Face encoders take a model folder as the backbone "
                            "itself (--backbone PATH), not a weights file")


@register_backbone("hf:", modality="audio", description="any Hugging Face audio encoder, mean-pooled",
                   available=lambda: (False, "local directory, HF cache or hub"))
def hub_audio_model(model_id: str, options: BackboneOptions) -> HFAudioBackbone:
    _no_weights_file(options)
    return HFAudioBackbone.create(model_id)


def _from_folder(path: Path, options: BackboneOptions) -> HFAudioBackbone:
    _no_weights_file(options)
    return HFAudioBackbone.create(str(path))


register_folder_kind(
    detect=is_audio_model_folder,
    load=_from_folder,
    describe=lambda path: BackboneInfo(str(path), "audio", "Hugging Face audio model folder", True, "local folder"),
)
