"""The JSON written beside an exported graph (`model.onnx` -> `model.onnx.json`): what the graph takes and
predicts, the preprocessing it expects, and what the export measured (parity, int8 accuracy change)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ArtifactError

ONNX_FORMAT = "headstart-onnx"
ONNX_SCHEMA_VERSION = 1


class OnnxManifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal["headstart-onnx"] = ONNX_FORMAT
    format_version: int = ONNX_SCHEMA_VERSION
    graph: str  # file name of the graph, beside this file
    modality: str
    classes: list[str] = Field(min_length=1)  # classes, labels or targets: one per output
    backbone_name: str
    inputs: list[str]
    output: str = "probabilities"
    preprocessing: dict[str, Any]
    precision: Literal["fp32", "int8"] = "fp32"
    # What the graph's output is (headstart.tasks) and what the decisions use: the head's tuned parameters
    # (thresholds per label, the intervals' half widths); classification in older graphs.
    task: str = "classification"
    task_params: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    quantization: dict[str, Any] | None = None
    metrics: dict[str, Any] = {}
    versions: dict[str, str] = {}
    exported_at: str | None = None

    @field_validator("graph")
    @classmethod
    def _a_name_beside_the_sidecar(cls, name: str) -> str:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"'{name}' is not a file name beside the description (it names a path elsewhere)")
        return name


def sidecar_path(graph: Path) -> Path:
    return graph.with_name(graph.name + ".json")


def read_sidecar(graph: Path) -> OnnxManifest:
    file = sidecar_path(graph)
    if not file.is_file():
        raise ArtifactError(f"{file} is missing: a graph exported by headstart has its description beside it "
                            "(run `headstart export` again)")
    try:
        raw = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{file} is not valid JSON ({e}); export again") from None
    if not isinstance(raw, dict) or raw.get("format") != ONNX_FORMAT:
        raise ArtifactError(f"{file} is not a headstart ONNX description (format {ONNX_FORMAT!r} expected)")
    version = raw.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{file}: field 'format_version' must be a whole number, got {version!r}; export again")
    if version > ONNX_SCHEMA_VERSION:
        raise ArtifactError(f"{file} was written by a newer headstart (schema {raw.get('format_version')}); upgrade")
    try:
        return OnnxManifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        raise ArtifactError(f"{file}: field '{'.'.join(map(str, first['loc']))}': {first['msg']}; export again") from None
