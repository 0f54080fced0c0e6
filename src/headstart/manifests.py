"""Typed manifests: the JSON beside the weights of a saved model and of a backbone folder.

pydantic models with a schema version: a manifest is validated once when read, and every error names the
file and the field. Manifests written by older schema versions are migrated on read; newer ones are refused
with the version that wrote them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ArtifactError

MODEL_FORMAT = "headstart-model"
MODEL_SCHEMA_VERSION = 3
BACKBONE_FORMAT = "headstart-backbone"
BACKBONE_SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class HeadConfig(_Record):
    """What rebuilds a ClassificationHead."""

    kind: str
    in_dim: int = Field(gt=0)
    n_classes: int = Field(ge=1)  # outputs: classes, labels (multilabel) or targets (regression)
    hidden: int = Field(default=1024, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    temperature: float = Field(default=1.0, gt=0)  # temperature scaling; 1 = uncalibrated (schema 2 models)
    # The task (headstart.tasks) and what was tuned for it on the validation split (per-label temperatures and
    # thresholds, targets' mean and scale, conformal half widths); classification in older models.
    task: str = "classification"
    task_settings: dict[str, Any] = {}
    task_params: dict[str, Any] = {}


class StrategyRecord(_Record):
    """The strategy that trained the model and its settings (as the strategy's dataclass fields)."""

    name: str
    settings: dict[str, Any] = {}


class DataRecord(_Record):
    source: str
    splits: dict[str, int]
    labels_per_class: int | None = None
    seed: int = 0
    # What rebuilds the same splits later (export checks parity on the validation split): absent in older models.
    val_size: float | int | None = None
    test_size: float | int | None = None
    text_column: str | None = None
    label_column: str | None = None
    # A distilled student's training split holds a teacher's labels for unlabeled items: which, and how many.
    distillation: dict[str, Any] | None = None
    # The held-out test data given apart from `source` (fit --test): the test split is read from it, not cut.
    test_source: str | None = None
    # Where each split came from, in words (the split plan `fit` logs); absent in older models.
    origins: dict[str, str] | None = None


class ModelManifest(BaseModel):
    """`headstart.json` of a saved model (RUN/model)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    format: Literal["headstart-model"] = MODEL_FORMAT
    format_version: int = MODEL_SCHEMA_VERSION
    modality: str
    classes: list[str] = Field(min_length=1)  # class, label or target names, one per head output
    backbone_name: str
    backbone: dict[str, Any]
    head: HeadConfig
    strategy: StrategyRecord
    data: DataRecord | None = None
    precision: str = "auto"  # fit's --precision as given (auto, fp32, bf16)
    # What that precision was on the machine that trained ("fp32", "bf16", "fp16"), and the precision `metrics` were
    # measured at: the one `evaluate` and `report` use unless told otherwise. None in models saved before.
    training_precision: str | None = None
    evaluation_precision: str | None = None
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    timings: dict[str, float] = {}
    embedding_cache: dict[str, int] | None = None
    calibration: dict[str, Any] | None = None  # how the head's temperature was fitted (None: not calibrated)
    # What computed the frozen backbone's embeddings in fit (headstart.extraction_engines): the engine asked for,
    # the one used, how it was chosen (with the measured items/s) and what it computes in. None in models saved before.
    extraction_engine: dict[str, Any] | None = None
    versions: dict[str, str] = {}
    saved_at: str | None = None

    @model_validator(mode="after")
    def _classes_match_head(self) -> ModelManifest:
        if len(self.classes) != self.head.n_classes:
            raise ValueError(f"{len(self.classes)} class names but the head has {self.head.n_classes} outputs")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names repeat")
        return self


class BackboneFolderManifest(BaseModel):
    """`headstart-backbone.json` of a backbone folder (written by `headstart pretrain`)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    format: Literal["headstart-backbone"] = BACKBONE_FORMAT
    format_version: int = BACKBONE_SCHEMA_VERSION
    backbone: dict[str, Any]
    pretraining: dict[str, Any] | None = None
    versions: dict[str, str] = {}


def _migrate_model_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (headstart 0.1, before typed manifests): the strategy was a bare name, precision and head kind sat
    in `training`."""
    raw = dict(raw)
    training = dict(raw.get("training") or {})
    if isinstance(raw.get("strategy"), str):
        settings = {"head": training.pop("head_kind")} if "head_kind" in training else {}
        raw["strategy"] = {"name": raw["strategy"], "settings": settings}
    raw.setdefault("precision", training.pop("precision", "auto"))
    raw["training"] = training
    raw.setdefault("backbone_name", str((raw.get("backbone") or {}).get("family", "unknown")))
    raw["format_version"] = 2
    return raw


def _migrate_model_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 (before calibration): no temperature, which means 1 (the head's default)."""
    return {**raw, "format_version": 3}


MIGRATIONS = {1: _migrate_model_v1, 2: _migrate_model_v2}


def _read_json_object(file: Path) -> dict[str, Any]:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{file} is not valid JSON ({e}); the folder is damaged: save or pretrain again") from e
    if not isinstance(raw, dict):
        raise ArtifactError(f"{file} holds a JSON {type(raw).__name__}, not an object; the folder is damaged")
    return raw


def _validation_message(file: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{file}: field '{where}': {first['msg']}; the folder is damaged or was edited by hand"


def _check_version(file: Path, raw: dict[str, Any], expected_format: str, current: int) -> int:
    if raw.get("format") != expected_format:
        raise ArtifactError(f"{file} is not a {expected_format} manifest (format {raw.get('format')!r})")
    version = raw.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{file}: format_version {version!r} is not a schema version")
    if version > current:
        wrote = (raw.get("versions") or {}).get("headstart", "a newer release")
        raise ArtifactError(f"{file} was written by headstart {wrote} (manifest schema {version}); this headstart "
                            f"reads schema {current} and older: upgrade headstart (pip install -U headstart)")
    return version


def read_model_manifest(file: Path) -> ModelManifest:
    raw = _read_json_object(file)
    version = _check_version(file, raw, MODEL_FORMAT, MODEL_SCHEMA_VERSION)
    while version < MODEL_SCHEMA_VERSION:
        raw = MIGRATIONS[version](raw)
        version += 1
    try:
        return ModelManifest.model_validate(raw)
    except ValidationError as e:
        raise ArtifactError(_validation_message(file, e)) from None


def read_backbone_manifest(file: Path) -> BackboneFolderManifest:
    raw = _read_json_object(file)
    _check_version(file, raw, BACKBONE_FORMAT, BACKBONE_SCHEMA_VERSION)
    try:
        return BackboneFolderManifest.model_validate(raw)
    except ValidationError as e:
        raise ArtifactError(_validation_message(file, e)) from None
