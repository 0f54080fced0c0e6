"""The one interface every backbone family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.dataset import Modality


class Backbone(nn.Module, ABC):
    """A pre-trained (or trainable) encoder: raw inputs -> tensors -> fixed-size embeddings.

    Subclasses define their preprocessing, embedding size, layer groups (input to output, for freezing and
    discriminative learning rates) and a JSON `spec` from which `from_spec` rebuilds the architecture offline.
    """

    modality: Modality
    embedding_dim: int
    is_pretrained: bool = True  # False for random initialisation: no head-first stage, no embedding cache

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

    def fingerprint(self) -> str:
        """Identifies weights + preprocessing, for caching embeddings. Defaults to spec + weight checksum."""
        from .._util import sha256_bytes, stable_json

        h = torch.zeros((), dtype=torch.float64)
        for p in self.state_dict().values():
            if p.dtype.is_floating_point:
                h += p.double().sum() + p.double().abs().sum() * 1e-3
        return sha256_bytes(stable_json(self.spec).encode(), repr(h.item()).encode())[:32]


class ImageBackbone(Backbone):
    """Shared preprocessing for image backbones: resize to a square, normalise."""

    modality = "image"

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], interpolation: str = "bilinear"):
        super().__init__()
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

    def draft_size(self) -> tuple[int, int]:
        """JPEG draft decoding may shrink large files down to about twice the model's input, never below it."""
        return (2 * self.image_size, 2 * self.image_size)


class TextBackbone(Backbone):
    """Text backbones turn lists of strings into token batches with `collate`."""

    modality = "text"

    @abstractmethod
    def collate(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise with padding to the longest text in the batch (dynamic padding)."""
