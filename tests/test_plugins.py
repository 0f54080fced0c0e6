"""Plug-ins: a backbone family and a strategy registered from this file alone fit, save and load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import headstart
from headstart.backbones import ImageBackbone, register_backbone, register_family
from headstart.backbones.registry import FAMILIES, NAMES
from headstart.heads import Classifier, LinearHead
from headstart.strategies import STRATEGIES, Strategy, TrainingRun, register_strategy
from headstart.structures import STRUCTURES


class ColourStatistics(ImageBackbone):
    """A toy 'pre-trained' encoder: per-channel mean and standard deviation of the pixels, then a fixed linear map."""

    def __init__(self, image_size: int = 16):
        super().__init__(image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        self.mix = nn.Linear(6, 8)
        self.embedding_dim = 8

    @property
    def spec(self) -> dict[str, Any]:
        return {"family": "toy_colour", **self.preprocessing}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], model_dir: Path) -> ColourStatistics:
        return cls(spec["image_size"])

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.mix.parameters())]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(2)
        return self.mix(torch.cat([flat.mean(2), flat.std(2)], 1))


@dataclass
class NearestCentroid(Strategy):
    """A toy strategy: the head's weights are the class means of the (standardised) embeddings."""

    name = "toy_centroid"
    temperature: float = 1.0

    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        train_x, _ = run.embed_splits()
        head = LinearHead(train_x.shape[1], len(run.classes), dropout=0.0)
        x = torch.from_numpy(train_x)
        head.standardize.fit(x)
        z = head.standardize(x)
        y = torch.from_numpy(run.train.labels)
        centroids = torch.stack([z[y == c].mean(0) for c in range(len(run.classes))])
        with torch.no_grad():
            head.layers[1].weight.copy_(centroids / self.temperature)
            head.layers[1].bias.copy_(-(centroids ** 2).sum(1) / (2 * self.temperature))
        return Classifier(run.backbone, head), {"centroids": len(centroids)}


@pytest.fixture
def plugins():
    register_family("toy_colour")(ColourStatistics)
    register_backbone("toy-colour", modality="image", description="per-channel colour statistics")(
        lambda _, options: ColourStatistics(options.image_size or 16))
    register_strategy(NearestCentroid)
    yield
    FAMILIES.pop("toy_colour", None), NAMES.pop(("toy-colour", "image")), STRATEGIES.pop("toy_centroid")
    STRUCTURES.pop("toy_centroid")


def test_toy_family_and_strategy_fit_save_and_load(plugins, image_folder, tmp_path):
    assert "toy-colour" in {row.name for row in headstart.list_backbones()}
    model = headstart.fit(image_folder, "toy-colour", "toy_centroid", out=tmp_path / "run", temperature=0.5)
    assert model.metrics["accuracy"] >= 0.85  # colour classes: the statistics separate them
    assert model.manifest.training == {"centroids": 3}
    assert model.manifest.strategy.settings == {"temperature": 0.5}
    loaded = headstart.load(tmp_path / "run" / "model")
    files = sorted(image_folder.rglob("*.png"))
    np.testing.assert_allclose(loaded.predict_proba(files), model.predict_proba(files), atol=1e-6)
    assert isinstance(loaded.backbone, ColourStatistics)


def test_a_model_of_an_unregistered_family_fails_to_load_with_a_message(plugins, image_folder, tmp_path):
    headstart.fit(image_folder, "toy-colour", "probe", out=tmp_path / "run")
    FAMILIES.pop("toy_colour")
    with pytest.raises(headstart.HeadstartError, match=r"unknown backbone family 'toy_colour'.*plug-in"):
        headstart.load(tmp_path / "run" / "model")
