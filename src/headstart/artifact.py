"""The saved model folder: `model.safetensors` (all weights) + `headstart.json` (a typed manifest) + the
backbone's own files (e.g. a tokenizer). Never pickle; every path the manifest names stays inside the folder."""

from __future__ import annotations

import json
from pathlib import Path

from ._util import atomic_directory, recover_directory
from .backbones import backbone_from_spec
from .backbones.base import Backbone
from .errors import ArtifactError, HeadstartError
from .heads import ClassificationHead, Classifier
from .manifests import ModelManifest, read_model_manifest
from .modalities import ensure_same_modality
from .strategies import strategy_class
from .weights import load_weights, save_weights

MANIFEST = "headstart.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"


def write_model_dir(path: Path, classifier: Classifier, manifest: ModelManifest,
                    extra_files: dict[str, bytes] | None = None) -> None:
    """Write the folder atomically: a crash leaves the previous model (if any) or the new one, never a mix.

    `extra_files` (name -> bytes, e.g. metrics.json) are part of the same atomic step.
    """
    with atomic_directory(path) as tmp:
        save_weights(classifier, tmp / WEIGHTS)
        classifier.backbone.save_files(tmp)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
        (tmp / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, default=str) + "\n")


def read_manifest(path: Path) -> ModelManifest:
    recover_directory(path)  # a save killed between its two renames left the previous model aside
    file = path / MANIFEST
    if not path.is_dir() or not file.is_file():
        raise ArtifactError(f"{path} is not a saved headstart model: {file} is missing (give the RUN/model folder)")
    return read_model_manifest(file)


def _rebuild_backbone(manifest: ModelManifest, path: Path) -> Backbone:
    try:
        backbone = backbone_from_spec(manifest.backbone, path)
    except HeadstartError:
        raise
    except (OSError, json.JSONDecodeError) as e:  # a config or tokenizer file missing or truncated
        raise ArtifactError(f"{path}: the backbone's files cannot be read ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]}); the folder is damaged") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path / MANIFEST}: the backbone description is incomplete or invalid "
                            f"({type(e).__name__}: {e}); the folder is damaged") from None
    except Exception as e:  # config or tokenizer files missing, truncated or unreadable
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ArtifactError(f"{path}: the backbone's files cannot be read ({detail}); the folder is damaged") from None
    ensure_same_modality(backbone.modality, manifest.modality, "the saved backbone", f"{path / MANIFEST} says",
                         "the folder is damaged", ArtifactError)
    return backbone


def read_model_dir(path: Path, device: str = "cpu") -> tuple[Classifier, ModelManifest]:
    """Rebuild a saved classifier and its manifest with no network and no pickle."""
    manifest = read_manifest(path)
    backbone = _rebuild_backbone(manifest, path)
    if manifest.head.in_dim != backbone.embedding_dim:
        raise ArtifactError(f"{path / MANIFEST}: the head takes {manifest.head.in_dim}-d embeddings, but the backbone "
                            f"gives {backbone.embedding_dim}-d: the folder is damaged")
    try:
        head = ClassificationHead.from_config(manifest.head.model_dump())
    except ValueError as e:
        raise ArtifactError(f"{path / MANIFEST}: {e}") from None
    classifier = strategy_class(manifest.strategy.name).restore(Classifier(backbone, head), manifest.strategy.settings)
    load_weights(classifier, path / WEIGHTS, device=device)
    return classifier, manifest
