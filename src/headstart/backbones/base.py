"""The one interface every backbone family implements."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._util import installed_versions, sha256_bytes, stable_json


class Backbone(nn.Module, ABC):
    """A pre-trained (or trainable) encoder: raw inputs -> tensors -> fixed-size embeddings.

    Subclasses define their preprocessing, embedding size, layer groups (input to output, for freezing and
    discriminative learning rates) and a JSON `spec` from which `from_spec` rebuilds the architecture offline.
    """

    modality: str  # a name registered in headstart.modalities
    embedding_dim: int
    is_pretrained: bool = True  # False for random initialisation: no head-first stage, no embedding cache
    # Fine-tuning defaults of the family: the last layer group's learning rate, and how much slower the first
    # group learns (discriminative rates). CNNs' early filters are generic and need to move little.
    finetune_lr: float = 1e-3
    finetune_lr_ratio: float = 10.0
    # LoRA defaults of the family (strategies/lora.py): adapter rank, scale alpha (the update is scaled by
    # alpha / rank) and the learning rate of adapters and head. Hu et al. 2021 use rank 8, alpha 16 on GLUE.
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_lr: float = 1e-3
    # A model a user calls a sentence encoder (trained to make cosine similarity meaningful, as
    # sentence-transformers models are): what `auto` looks for before choosing `contrastive`.
    sentence_encoder: bool = False

    @property
    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description that rebuilds this architecture (weights come separately)."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: dict[str, Any], model_dir: Path) -> Backbone:
        """Rebuild the architecture (random weights) from `spec` and files saved beside it in `model_dir`."""

    def save_files(self, model_dir: Path) -> None:
        """Write extra non-weight files (configs, tokenizers) that `from_spec` needs. None by default."""

    @abstractmethod
    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped from the input side to the output side."""

    @abstractmethod
    def forward(self, batch: Any) -> torch.Tensor:
        """Embeddings of shape (batch, embedding_dim)."""

    def lora_targets(self) -> list[str]:
        """Names (module-name suffixes) of the layers LoRA adapts in this family; PEFT injects adapters there.

        A family without a sensible default says so; `--lora-targets` then names the layers."""
        from ..errors import BackboneError

        raise BackboneError(f"{type(self).__name__} backbones have no default LoRA layers: name them with "
                            "lora_targets (--lora-targets), e.g. the names of their nn.Linear layers")

    def fingerprint(self) -> str:
        """Identifies what the embeddings depend on: the architecture and preprocessing (`spec`), every weight's
        bytes, and the versions of the libraries that compute them. Keys the embedding cache.

        The hash of the weights is remembered until a tensor is replaced or changed in place (PyTorch counts
        in-place changes in `Tensor._version`), so it is computed once per loaded backbone.
        """
        state = self.state_dict(keep_vars=True)
        version = tuple((k, t.data_ptr(), t._version) for k, t in state.items())
        if getattr(self, "_weights_hash", (None, None))[0] != version:
            self._weights_hash = (version, weights_digest(state))
        return sha256_bytes(stable_json(self.spec).encode(), self._weights_hash[1].encode(),
                            stable_json(numerics_versions()).encode())[:32]

    def inference_copy(self, device: torch.device, fold: bool = True) -> nn.Module:
        """The module to run extraction with, in eval mode on `device`; `self` unless a family does better.

        Runs outside inference mode: moved parameters must stay usable for training afterwards.
        """
        return self.eval().to(device)

    # --- ONNX export (headstart.export): what differs by family sits here, not behind a switch on a name ---

    # How int8 quantisation suits this family: "static" calibrates activation ranges on training items (CNNs,
    # whose activations are well-behaved per channel); "dynamic" quantises the weights and measures activation
    # ranges per batch at run time (transformer encoders, whose activations vary with the text).
    int8_method: str = "static"

    # A family that can be exported implements the four methods below (image and text backbones do). They are not
    # abstract, so that a family without them still trains and predicts; exporting it is a one-line error.
    def onnx_inputs(self, batch: Any) -> dict[str, torch.Tensor]:
        """A model-input batch (as `extraction_batches` yields it) as the graph's named input tensors."""
        raise self._not_exportable()

    def onnx_batch(self, *tensors: torch.Tensor) -> Any:
        """Inside the graph: the named inputs (in `onnx_inputs` order) back into what `forward` takes."""
        raise self._not_exportable()

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The input axes that vary between calls (batch; sequence for text)."""
        raise self._not_exportable()

    def onnx_preprocessing(self) -> dict[str, Any]:
        """What a deployment must do to an item before the graph (recorded beside it for the runtime's codec)."""
        raise self._not_exportable()

    def _not_exportable(self) -> Exception:
        from ..errors import BackboneError

        return BackboneError(f"{type(self).__name__} backbones cannot be exported to ONNX yet (the family does not "
                             "implement onnx_inputs/onnx_batch/onnx_dynamic_axes/onnx_preprocessing)")

    def onnx_files(self) -> dict[str, bytes]:
        """Files the preprocessing needs beside the graph (e.g. a tokenizer), by the names it records."""
        return {}

    # --- explanations (headstart.explain) ---

    def explain_layer(self) -> nn.Module:
        """The layer explanations attribute to: for image families the last convolutional feature map (Grad-CAM),
        for text families the input embeddings (Integrated Gradients). The family knows its architecture, so the
        choice is made here and not in the explainer."""
        from ..errors import BackboneError

        raise BackboneError(f"{type(self).__name__} backbones do not name a layer to explain yet (explain_layer)")


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """blake2b over every tensor's name, dtype, shape and bytes."""
    h = hashlib.blake2b(digest_size=32)
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def numerics_versions() -> dict[str, str]:
    """Versions of the libraries whose kernels and preprocessing shape an embedding's numbers."""
    return installed_versions("torch", "torchvision", "timm", "transformers", "tokenizers", "pillow")


class ImageBackbone(Backbone):
    """Shared preprocessing for image backbones: resize to a square, normalise."""

    modality = "image"

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], interpolation: str = "bilinear"):
        super().__init__()
        if int(image_size) < 1:
            raise ValueError(f"image size must be at least 1 pixel, got {image_size}")
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": self.mean, "std": self.std, "interpolation": self.interpolation}

    def transform(self, train: bool = False) -> Callable:
        """PIL image -> normalised tensor; with `train`, a mild random resized crop (no flips: digits, text)."""
        from torchvision.transforms import v2 as T

        mode = T.InterpolationMode(self.interpolation)
        size = (self.image_size, self.image_size)
        resize = (T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18), interpolation=mode, antialias=True)
                  if train else T.Resize(size, interpolation=mode, antialias=True))
        return T.Compose([T.PILToTensor(), resize, T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)])

    def onnx_inputs(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixels": batch.float().contiguous()}

    def onnx_batch(self, *tensors: torch.Tensor) -> torch.Tensor:
        return tensors[0]

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"pixels": {0: "batch"}}

    def onnx_preprocessing(self) -> dict[str, Any]:
        return {**self.preprocessing, "input": "pixels", "layout": "NCHW", "scale": "1/255 then (x - mean) / std"}

    def draft_size(self) -> tuple[int, int]:
        """JPEG draft decoding may shrink large files down to about twice the model's input, never below it."""
        return (2 * self.image_size, 2 * self.image_size)

    def inference_copy(self, device: torch.device, fold: bool = True) -> nn.Module:
        """channels_last in eval mode; with `fold`, a copy with each BatchNorm folded into its convolution.

        The folded copy shares nothing with `self`, so a backbone about to be fine-tuned is unaffected.
        """
        from .folding import folded_copy

        self.eval().to(device, memory_format=torch.channels_last)
        if not fold:
            return self
        example = torch.randn(2, 3, self.image_size, self.image_size, generator=torch.Generator().manual_seed(0))
        model = folded_copy(self, example.to(device, memory_format=torch.channels_last))
        return model if model is self else model.to(memory_format=torch.channels_last)


class TextBackbone(Backbone):
    """Text backbones turn lists of strings into token batches with `collate`."""

    modality = "text"
    # minilm on SST-2, dev accuracy (benchmarks/RESULTS.md): lr 1e-4 -> 85.2%, 2e-4 -> 86.2% (ratio 10); with
    # ratio 2.5: 2e-4 -> 87.4%, 3e-4 -> 88.1%. Transformers' lower layers need to move more than a CNN's.
    finetune_lr = 3e-4
    finetune_lr_ratio = 2.5
    int8_method = "dynamic"

    @abstractmethod
    def collate(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise with padding to the longest text in the batch (dynamic padding)."""

    @abstractmethod
    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts (capped at the backbone's limit), used to batch texts of similar length together."""

    def token_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One state per sub-word (batch x sub-words x embedding_dim), for token tagging. (The interface grew here
        for the `tokens` task, which puts its head on these instead of the pooled embedding; a family without them
        refuses the task in one line.)"""
        from ..errors import BackboneError

        raise BackboneError(f"{type(self).__name__} backbones give one embedding per text, not one per token: token "
                            "tagging (--task tokens) needs a Transformers encoder (minilm, mpnet, hf:...)")


class AudioBackbone(Backbone):
    """Audio backbones take {"waveform": (B, L) mono float at `sample_rate`, "length": (B,)} batches and decide
    themselves how to window, mask and pool clips of different lengths.

    `min_samples`: shorter clips are centred in silence of this length before batching (one analysis window).
    """

    modality = "audio"
    sample_rate: int = 16_000
    min_samples: int = 1

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What the artifact records about how sound becomes model input (rate, windows, pooling)."""
        return {"sample_rate": self.sample_rate, "min_samples": self.min_samples}

    def onnx_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"waveform": batch["waveform"].float().contiguous(), "length": batch["length"].long()}

    def onnx_batch(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"waveform": tensors[0], "length": tensors[1]}

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"waveform": {0: "batch", 1: "samples"}, "length": {0: "batch"}}

    def onnx_preprocessing(self) -> dict[str, Any]:
        return {**self.preprocessing, "input": ["waveform", "length"],
                "decode": "mono float32 at sample_rate (soxr HQ), shorter clips centred in min_samples of silence"}
