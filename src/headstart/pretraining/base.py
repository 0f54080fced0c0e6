"""What every pretraining objective provides, and the pieces the image objectives share."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones import resolve_backbone
from ..backbones.base import Backbone, ImageBackbone
from ..backbones.folder import BACKBONE_MANIFEST
from ..data.unlabeled import UnlabeledData
from ..errors import BackboneError, HeadstartError
from ..modalities.image import ImageTensors
from ..settings import setting


@dataclass(frozen=True)
class ObjectiveOptions:
    """Settings of the objectives; each objective reads the ones that apply to it (the last three are set by
    `pretrain` from its run and backbone options)."""

    denoise: bool = setting(False, "autoencoder: denoising variant (noisy input, clean target).")
    mask_ratio: float = setting(0.5, "masked: fraction of patches hidden.")
    temperature: float = setting(0.5, "contrastive: NT-Xent temperature.")
    whole_word: bool = setting(False, "mlm: mask whole words instead of word pieces.")
    seed: int = setting(0, cli=False)
    image_size: int | None = setting(None, cli=False)
    max_length: int | None = setting(None, cli=False)

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise HeadstartError(f"--mask-ratio must be between 0 and 1, got {self.mask_ratio}")
        if self.temperature <= 0:
            raise HeadstartError(f"--temperature must be positive, got {self.temperature}")


@dataclass(frozen=True)
class PretrainOptions:
    """How long, how fast and from which weights a pretraining runs: it stops at the first of `epochs`,
    `max_steps` and `max_minutes`."""

    from_weights: str | None = setting(None, "Start images from 'pretrained' (published weights), a timm weights "
                                             "file or an earlier pretrain folder; default random init. Text always "
                                             "starts pre-trained.", flag="from")
    epochs: int | None = setting(None, "Passes over the data (default 20 images, 3 text; unlimited with "
                                       "--max-minutes or --max-steps).")
    max_minutes: float | None = setting(None, "Time budget: stop after this many minutes of training.")
    max_steps: int | None = setting(None, "Stop after this many optimiser steps.")
    batch_size: int | None = setting(None, "Default 128 (contrastive 256, mlm 32).")
    lr: float | None = setting(None, "Peak learning rate (default 1e-3 images, 5e-5 mlm).")

    def __post_init__(self) -> None:
        for name in ("epochs", "max_minutes", "max_steps", "batch_size", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise HeadstartError(f"--{name.replace('_', '-')} must be positive, got {value}")


class Objective(nn.Module):
    """A self-supervised loss around a backbone. Subclasses set `name`, `modality`, `paper` and `options`.

    The trainer asks for a torch Dataset and a collate function, calls `loss(batch)` on each batch and, at the
    end, `trained_backbone()` for the encoder to save (the heads used only for pretraining are dropped).
    """

    name: str = ""
    modality: str = "image"
    paper: str = ""
    default_lr: float = 1e-3
    default_batch_size: int = 128
    default_epochs: int = 20
    decode_in_workers: bool = False  # items are decoded in DataLoader worker processes (images)

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.options: dict[str, Any] = {}

    @classmethod
    def create(cls, backbone: Backbone, data: UnlabeledData, options: ObjectiveOptions) -> Objective:
        """The objective around `backbone`, set up for `data`."""
        raise NotImplementedError

    @classmethod
    def starting_backbone(cls, name: str, from_weights: str | None, options: ObjectiveOptions) -> tuple[Backbone, str]:
        """The encoder to train and a description of its starting weights: random init by default; 'pretrained'
        (published weights), a weights file or a folder from an earlier `pretrain`."""
        size = options.image_size
        if from_weights is None:
            net = resolve_backbone(name, pretrained=False, image_size=size, modality=cls.modality)
            return net, ("random init" if not Path(name).expanduser().is_dir() else f"backbone folder {name}")
        if from_weights == "pretrained":
            net = resolve_backbone(name, pretrained=True, image_size=size, modality=cls.modality)
            if not net.is_pretrained:
                raise BackboneError(f"backbone '{name}' has no published pre-trained weights: drop --from, or give "
                                    "a weights file or an earlier pretrained folder")
            return net, net.spec.get("source") or name
        path = Path(from_weights).expanduser()
        if path.is_dir() and (path / BACKBONE_MANIFEST).is_file():
            return resolve_backbone(str(path)), f"backbone folder {path}"
        if not path.exists():
            raise BackboneError(f"--from {from_weights}: no such file or folder (give 'pretrained', a weights file, or "
                                "a folder written by `headstart pretrain`)")
        return resolve_backbone(name, weights=str(path), image_size=size, modality=cls.modality), str(path)


    def dataset(self, data: UnlabeledData) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def collate(self, batch: list) -> Any:
        return torch.utils.data.default_collate(batch)

    def loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def batch_size_of(self, batch: Any) -> int:
        return len(batch)

    def trained_backbone(self) -> Backbone:
        return self.backbone

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "paper": self.paper, "options": self.options}


OBJECTIVES: dict[tuple[str, str], type[Objective]] = {}  # (name, modality): "contrastive" exists for images and audio


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make an objective known to `pretrain --objective` by its `name`, for its `modality`."""
    OBJECTIVES[(cls.name, cls.modality)] = cls
    return cls


def objective_names() -> list[str]:
    return list(dict.fromkeys(name for name, _ in OBJECTIVES))


def objectives_by_modality() -> dict[str, list[str]]:
    """Objective names grouped by the modality they train on."""
    groups: dict[str, list[str]] = {}
    for name, kind in OBJECTIVES:
        groups.setdefault(kind, []).append(name)
    return groups


def find_objective(name: str, modality: str) -> type[Objective]:
    """The objective `name` for data of `modality`; without one for it, the first of that name (whose modality
    the caller then reports as a mismatch)."""
    return OBJECTIVES.get((name, modality)) or next(cls for (n, _), cls in OBJECTIVES.items() if n == name)


class ImageObjective(Objective):
    """Image objectives: items are decoded in DataLoader workers by `transform` (PIL -> tensor or views)."""

    decode_in_workers = True
    uses_options: tuple[str, ...] = ()  # the ObjectiveOptions fields passed to the constructor

    @classmethod
    def create(cls, backbone: Backbone, data: UnlabeledData, options: ObjectiveOptions) -> ImageObjective:
        """Augmentations follow the data's colour; the objective's own options come from `uses_options`."""
        return cls(backbone, data.is_grayscale(), **{name: getattr(options, name) for name in cls.uses_options})

    def __init__(self, backbone: ImageBackbone, grayscale: bool = False):
        super().__init__(backbone)
        self.grayscale = grayscale

    def transform(self) -> Callable:
        return self.backbone.transform(train=False)

    def dataset(self, data: UnlabeledData) -> torch.utils.data.Dataset:
        size = self.backbone.image_size
        return ImageTensors(data.items, self.transform(), None, self.backbone.draft_size(), (3, size, size))

    def collate(self, batch: list) -> Any:
        """Only the images (or views); unreadable files were left out before training."""
        x = torch.utils.data.default_collate([b[0] for b in batch])
        if isinstance(x, torch.Tensor):
            return x.contiguous(memory_format=torch.channels_last)
        return [v.contiguous(memory_format=torch.channels_last) for v in x]

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)

    def normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """A pixel-unit quantity ([0, 1] scale) in the backbone's normalised units, per channel."""
        std = torch.tensor(self.backbone.std, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        return pixels / std


class ConvDecoder(nn.Module):
    """Embedding (B, D) -> image (B, C, H, W): a linear map onto a 4x4 grid, then upsample-and-convolve blocks
    (x2 each, nearest neighbour then 3x3 conv, avoiding transposed-convolution checkerboards), resized to (H, W)
    (`image_size`: S for a square, or (H, W) such as a spectrogram's bands x frames).

    Hand-written: the Backbone interface exposes only the pooled embedding (the representation `fit` uses),
    and no library ships a decoder from a vector for an arbitrary encoder.
    """

    def __init__(self, dim: int, image_size: int | tuple[int, int], width: int = 128, channels: int = 3):
        super().__init__()
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.start = 4
        n_up = max(1, math.ceil(math.log2(max(self.image_size) / self.start)))
        widths = [max(16, width >> k) for k in range(n_up + 1)]
        self.fc = nn.Sequential(nn.Linear(dim, widths[0] * self.start ** 2), nn.ReLU(inplace=True))
        self.width = widths[0]
        blocks = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(len(z), self.width, self.start, self.start)
        x = self.out(self.blocks(x))
        if tuple(x.shape[-2:]) != self.image_size:
            x = nn.functional.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return x

