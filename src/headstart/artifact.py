"""The saved model: `model.safetensors` + `headstart.json` (+ backbone config files). Never pickle."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model as save_weights

from ._util import atomic_directory
from .backbones.registry import BACKBONE_MANIFEST, backbone_from_spec
from .errors import HeadstartError
from .heads import ClassificationHead, Classifier
from .model import TrainedModel

MANIFEST = "headstart.json"
WEIGHTS = "model.safetensors"
FORMAT = "headstart-model"
FORMAT_VERSION = 1


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("headstart", "torch", "timm", "transformers", "lightning", "safetensors"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def save_model(model: TrainedModel, path: Path) -> Path:
    """Write the model directory atomically: a crash leaves the previous model (if any) untouched."""
    manifest = {
        **model.manifest,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "modality": model.modality,
        "classes": model.classes,
        "backbone": model.backbone.spec,
        "head": model.classifier.head.config,
        "versions": library_versions(),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_directory(path) as tmp:
        save_weights(model.classifier, str(tmp / WEIGHTS))
        model.backbone.save_files(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    model.manifest = manifest
    return path


def read_manifest(path: Path, name: str = MANIFEST) -> dict[str, Any]:
    file = path / name
    if not path.is_dir() or not file.is_file():
        raise HeadstartError(f"{path} is not a saved headstart model: {file} is missing (give the RUN/model folder)")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise HeadstartError(f"{file} is not valid JSON ({e}); the model folder is damaged") from e


def load_model(path: str | Path, device: str = "cpu") -> TrainedModel:
    """Rebuild a saved model from its folder with no network and no pickle."""
    path = Path(path).expanduser()
    manifest = read_manifest(path)
    if manifest.get("format") != FORMAT:
        raise HeadstartError(f"{path / MANIFEST} is not a headstart model manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise HeadstartError(f"{path} was saved by a newer headstart (format {manifest['format_version']}); upgrade")
    weights = path / WEIGHTS
    if not weights.is_file():
        raise HeadstartError(f"{weights} is missing; the model folder is incomplete")
    backbone = backbone_from_spec(manifest["backbone"], path)
    classifier = Classifier(backbone, ClassificationHead.from_config(manifest["head"]))
    load_weights(classifier, str(weights), device=device)
    return TrainedModel(classifier, manifest["classes"], manifest)


def save_backbone_dir(backbone, path: Path, info: dict[str, Any],
                      extra_files: dict[str, bytes] | None = None) -> Path:
    """A stand-alone backbone folder (e.g. from `pretrain`) that `fit --backbone PATH` accepts.

    `extra_files` (name -> bytes, e.g. a loss-curve plot) are written inside the same atomic step.
    """
    with atomic_directory(path) as tmp:
        save_weights(backbone, str(tmp / "backbone.safetensors"))
        backbone.save_files(tmp)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
        (tmp / BACKBONE_MANIFEST).write_text(json.dumps({**info, "backbone": backbone.spec,
                                                          "versions": library_versions()}, indent=2) + "\n")
    return path


def load_backbone_dir(path: Path):
    manifest = read_manifest(path, BACKBONE_MANIFEST)
    backbone = backbone_from_spec(manifest["backbone"], path)
    load_weights(backbone, str(path / "backbone.safetensors"))
    backbone.is_pretrained = True
    return backbone
