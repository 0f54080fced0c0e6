"""Does the exported graph predict what the PyTorch model does? Both run on the very same input tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset
from ..modalities import get_modality
from ..model import TrainedModel

MAX_ABS_DIFF = 1e-4  # fp32 graph vs fp32 PyTorch, in probability; float32 rounding is ~1e-6 here
# The graph computes in fp32, and so does evaluation (the model's metrics, `evaluate`, `report`): the reference is
# PyTorch at that precision, never the bfloat16 autocast `predict` may use for speed (up to 0.04 apart).
REFERENCE_PRECISION = "fp32"
BATCH = 32


@dataclass
class Inputs:
    """Preprocessed batches of some items, ready for both PyTorch and the graph, and their labels."""

    batches: list[tuple[object, dict[str, np.ndarray]]]  # (model batch for PyTorch, named arrays for the graph)
    labels: np.ndarray
    skipped: int

    @property
    def feeds(self) -> list[dict[str, np.ndarray]]:
        return [named for _, named in self.batches]


def prepare(model: TrainedModel, data: Dataset) -> Inputs:
    """Decode `data` once with the training side's preprocessing; unreadable items are left out (counted)."""
    batches, labels, skipped = [], [], 0
    for batch, idx, failed in get_modality(model.modality).extraction_batches(model.backbone, data.items, BATCH):
        bad = {i for i, _ in failed}
        keep = [j for j, i in enumerate(idx) if int(i) not in bad]
        skipped += len(idx) - len(keep)
        if not keep:
            continue
        named = {k: v[keep] for k, v in model.backbone.onnx_inputs(batch).items()}
        batches.append((model.backbone.onnx_batch(*named.values()), {k: v.cpu().numpy() for k, v in named.items()}))
        labels.append(np.asarray(data.labels)[np.asarray(idx)[keep]])
    return Inputs(batches, np.concatenate(labels) if labels else data.labels[:0], skipped)


@torch.inference_mode()
def torch_probabilities(model: TrainedModel, inputs: Inputs) -> np.ndarray:
    """PyTorch fp32 eager (no folding, no autocast): the reference the graph must match."""
    model.classifier.eval()
    rows = [model.classifier.scores(batch).float().numpy() for batch, _ in inputs.batches]
    return np.concatenate(rows) if rows else np.zeros((0, len(model.classes)), np.float32)


def session(graph: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])


def graph_probabilities(graph: Path, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    s = session(graph)
    return np.concatenate([s.run(["probabilities"], f)[0] for f in feeds])


def compare(model: TrainedModel, reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max absolute difference of two (items x outputs) score arrays and how often the model's decisions from them
    agree (`top1_agreement`: the same class; the same label set; values within MAX_ABS_DIFF of the targets'
    scale, for regression)."""
    if len(reference) == 0:
        return {"max_abs_diff": 0.0, "top1_agreement": 1.0}
    return {"max_abs_diff": float(np.abs(reference - got).max()),
            "top1_agreement": model.task.agreement(reference, got, model.classes, model.task_params)}


def headline(model: TrainedModel, scores: np.ndarray, labels: np.ndarray) -> float:
    """The task's first headline metric (accuracy, macro-F1, R²) of `scores` on `labels`, where the int8
    graph's change is measured."""
    if not len(labels):
        return float("nan")
    task = model.task
    return float(task.metrics(labels, scores, model.classes, model.task_params)[task.headline[0]])
