"""Backbone folders: a backbone's weights and typed manifest on their own (what `headstart pretrain` writes),
accepted by `fit --backbone PATH` and described by `headstart backbones PATH`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._util import atomic_directory, library_versions, recover_directory
from ..errors import BackboneError
from ..manifests import BackboneFolderManifest, read_backbone_manifest
from ..weights import load_weights, save_weights
from .base import Backbone
from .registry import FAMILIES, BackboneInfo, BackboneOptions, backbone_from_spec, register_folder_kind

BACKBONE_MANIFEST = "headstart-backbone.json"
BACKBONE_WEIGHTS = "backbone.safetensors"


def save_backbone_dir(backbone: Backbone, path: Path, pretraining: dict[str, Any],
                      extra_files: dict[str, bytes] | None = None) -> BackboneFolderManifest:
    """Write the folder atomically; `extra_files` (name -> bytes, e.g. a loss plot) go in the same step."""
    manifest = BackboneFolderManifest(backbone=backbone.spec, pretraining=pretraining, versions=library_versions())
    with atomic_directory(path) as tmp:
        save_weights(backbone, tmp / BACKBONE_WEIGHTS)
        backbone.save_files(tmp)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
        (tmp / BACKBONE_MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return manifest


def read_backbone_dir_manifest(path: Path) -> BackboneFolderManifest:
    recover_directory(path)
    return read_backbone_manifest(path / BACKBONE_MANIFEST)


def load_backbone_dir(path: Path, options: BackboneOptions | None = None) -> Backbone:
    """The folder's backbone with its weights; `image_size` / `max_length`, when given, replace the saved ones."""
    options = options or BackboneOptions()
    if options.weights is not None:
        raise BackboneError(f"--weights {options.weights}: {path} carries its own weights; give one or the other")
    manifest = read_backbone_dir_manifest(path)
    spec = dict(manifest.backbone)
    for key in ("image_size", "max_length"):
        if getattr(options, key) is not None and key in spec:
            spec[key] = getattr(options, key)
    backbone = backbone_from_spec(spec, path)
    load_weights(backbone, path / BACKBONE_WEIGHTS)
    backbone.is_pretrained = True
    return backbone


def describe_backbone_dir(path: Path) -> BackboneInfo:
    """A row for `headstart backbones PATH`, read from the folder's manifest."""
    manifest = read_backbone_dir_manifest(path)
    spec, pre = manifest.backbone, manifest.pretraining or {}
    data = pre.get("data") or {}
    family = spec.get("arch") or spec.get("family", "?")
    what = (f"{family} pretrained with {pre.get('objective', '?')} on {data.get('name', '?')} "
            f"({pre.get('steps', '?')} steps, final loss {pre.get('final_loss') or float('nan'):.4g})"
            if pre else f"{family} backbone folder")
    family_class = FAMILIES.get(spec.get("family", ""))
    modality = family_class.modality if family_class is not None else "?"
    return BackboneInfo(str(path), modality, what, True, "local folder")


register_folder_kind(detect=lambda path: (path / BACKBONE_MANIFEST).is_file(), load=load_backbone_dir,
                     describe=describe_backbone_dir)
