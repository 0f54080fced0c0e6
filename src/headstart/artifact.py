"""The saved model folder: `model.safetensors` (all weights) + `headstart.json` (a typed manifest) + the
backbone's own files (e.g. a tokenizer). Never pickle; every path the manifest names stays inside the folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._util import atomic_directory, recover_directory
from .backbones import backbone_from_spec
from .backbones.base import Backbone
from .errors import ArtifactError, HeadstartError
from .heads import ClassificationHead, Classifier
from .manifests import ModelManifest, read_model_manifest
from .modalities import ensure_same_modality, get_modality
from .structures import rebuild_structure
from .weights import load_weights, save_weights

MANIFEST = "headstart.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"
ITEMS = "items.safetensors"
DIGEST_BYTES = 8  # of each item's content digest: 8 bytes a record, a chance collision ~n/2^64 per item checked


@dataclass
class ItemDigests:
    """Which items, by content, a model was fitted on (training and validation splits: `fitted`) and tested on
    (`test`), as sorted 64-bit prefixes of the modality's content digest. `evaluate` uses them to leave out items
    the model has seen and to recognise its own test split; 8 bytes an item (1 MB per 125,000 items)."""

    fitted: np.ndarray
    test: np.ndarray

    @staticmethod
    def keys(modality: str, items: Sequence) -> np.ndarray:
        """Each item's 64-bit content key, in order; 0 (matching nothing) for a file that cannot be read, which
        decoding then reports as unreadable."""
        digest = get_modality(modality).digest

        def key(item: object) -> bytes:
            try:
                return digest(item)[:DIGEST_BYTES]
            except OSError:
                return bytes(DIGEST_BYTES)

        return np.frombuffer(b"".join(key(item) for item in items), dtype="<u8").copy()

    @classmethod
    def of(cls, modality: str, fitted: Sequence[Sequence], test: Sequence) -> ItemDigests:
        """From the items of the fitting splits (train, validation, ...) and the test split."""
        def known(keys: np.ndarray) -> np.ndarray:
            return np.unique(keys[keys != 0])  # 0: a file that could not be read

        return cls(known(np.concatenate([cls.keys(modality, part) for part in fitted] or [np.zeros(0, "<u8")])),
                   known(cls.keys(modality, test)))

    def seen(self, keys: np.ndarray) -> np.ndarray:
        """Which keys belong to items the model was fitted on, unless the same content is in its test split (fit
        scored those as test items, so every evaluation counts them alike)."""
        return np.isin(keys, self.fitted) & ~np.isin(keys, self.test)

    def with_fitted(self, modality: str, items: Sequence) -> ItemDigests:
        """These digests with more items the model was fitted on (e.g. calibrated on after training): no longer
        held out, even where they were test items."""
        keys = self.keys(modality, items)
        keys = keys[keys != 0]
        return ItemDigests(np.union1d(self.fitted, keys), np.setdiff1d(self.test, keys))

    def test_items_fitted(self) -> int:
        """How many distinct test items are also training or validation items (duplicates in the data)."""
        return int(np.isin(self.test, self.fitted).sum())

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        return save({"fitted": self.fitted, "test": self.test}, metadata={"digest_bytes": str(DIGEST_BYTES)})


def read_item_digests(path: Path) -> ItemDigests | None:
    """The model folder's record of the items it was fitted and tested on; None for models saved before it existed."""
    file = path / ITEMS
    if not file.is_file():
        return None
    from safetensors.numpy import load

    try:
        tensors = load(file.read_bytes())
        return ItemDigests(np.asarray(tensors["fitted"], "<u8"), np.asarray(tensors["test"], "<u8"))
    except OSError:
        raise
    except Exception as e:  # truncated, not safetensors, a tensor missing
        raise ArtifactError(f"{file} cannot be read ({type(e).__name__}); the folder is damaged: fit again, or "
                            f"delete {file.name} to evaluate without the check for training items") from None


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
    classifier = rebuild_structure(Classifier(backbone, head), manifest.strategy.name, manifest.strategy.settings)
    load_weights(classifier, path / WEIGHTS, device=device)
    return classifier, manifest
