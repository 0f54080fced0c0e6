"""Does the exported graph predict what the PyTorch model does? Both run on the very same input tensors.

For token tagging the inputs are the task's windows of the labeled sentences (runtime.token_windows), and the
scores compared are every real sub-word's tag probabilities (padding left out)."""

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
    items: list | None = None  # token tagging: the sentences (words joined by spaces), scored word by word

    @property
    def feeds(self) -> list[dict[str, np.ndarray]]:
        return [named for _, named in self.batches]


def prepare(model: TrainedModel, data: Dataset) -> Inputs:
    """Decode `data` once with the training side's preprocessing; unreadable items are left out (counted)."""
    if model.task.per_token:
        return _prepare_windows(model, data)
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


def _prepare_windows(model: TrainedModel, data: Dataset) -> Inputs:
    """The sentences' windows as the task cuts them, BATCH a batch, each batch padded to its longest window."""
    from ..runtime.token_windows import pad_windows
    from ..tasks.tokens import backbone_windows

    backbone = model.backbone
    windows = backbone_windows(backbone, [str(t).split(" ") for t in data.items])
    names = list(backbone.onnx_dynamic_axes())
    batches = []
    for start in range(0, len(windows), BATCH):
        padded = pad_windows(windows[start:start + BATCH], int(backbone.tokenizer.pad_token_id or 0))
        named = {k: padded[k] for k in names}
        batches.append((backbone.onnx_batch(*(torch.from_numpy(v) for v in named.values())), named))
    return Inputs(batches, np.asarray(data.labels), 0, [str(t) for t in data.items])


def _rows(scores: np.ndarray, feed: dict[str, np.ndarray]) -> np.ndarray:
    """Per-sub-word scores (batch x sequence x tags) as the rows of the real sub-words (padding left out), so that
    batches of different lengths join; per-item scores as they are."""
    return scores[feed["attention_mask"].astype(bool)] if scores.ndim == 3 else scores


@torch.inference_mode()
def torch_probabilities(model: TrainedModel, inputs: Inputs) -> np.ndarray:
    """PyTorch fp32 eager (no folding, no autocast): the reference the graph must match."""
    model.classifier.eval()
    rows = [_rows(model.classifier.scores(batch).float().numpy(), feed) for batch, feed in inputs.batches]
    return np.concatenate(rows) if rows else np.zeros((0, len(model.classes)), np.float32)


def session(graph: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])


def graph_probabilities(graph: Path, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    s = session(graph)
    return np.concatenate([_rows(s.run(["probabilities"], f)[0], f) for f in feeds])


def compare(model: TrainedModel, reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max absolute difference of two (items x outputs) score arrays and how often the model's decisions from them
    agree (`top1_agreement`: the same class; the same label set; values within MAX_ABS_DIFF of the targets'
    scale, for regression)."""
    if len(reference) == 0:
        return {"max_abs_diff": 0.0, "top1_agreement": 1.0}
    agreement = (float(np.mean(reference.argmax(-1) == got.argmax(-1))) if model.task.per_token  # the same tag
                 else model.task.agreement(reference, got, model.classes, model.task_params))
    return {"max_abs_diff": float(np.abs(reference - got).max()), "top1_agreement": agreement}


def graph_headline(model: TrainedModel, graph: Path, inputs: Inputs) -> float:
    """The task's first headline metric of the graph on `inputs`; for token tagging, its entity F1 with the words
    scored as the runtime scores them (windows stitched back, runtime.token_windows.word_scores)."""
    if inputs.items is None:
        return headline(model, graph_probabilities(graph, inputs.feeds), inputs.labels)
    from ..runtime.token_windows import word_scores
    from ..tasks.tokens import backend_tokenizer

    s, backbone = session(graph), model.backbone
    names = list(backbone.onnx_dynamic_axes())
    scores = word_scores(inputs.items, True, backend_tokenizer(backbone), backbone.max_length,
                         int(backbone.tokenizer.pad_token_id or 0), len(model.classes),
                         lambda feed: s.run(["probabilities"], {k: feed[k] for k in names})[0], BATCH)
    return headline(model, scores, inputs.labels)  # type: ignore[arg-type]


def headline(model: TrainedModel, scores: np.ndarray, labels: np.ndarray) -> float:
    """The task's first headline metric (accuracy, macro-F1, R²) of `scores` on `labels`, where the int8
    graph's change is measured."""
    if not len(labels):
        return float("nan")
    task = model.task
    return float(task.metrics(labels, scores, model.classes, model.task_params)[task.headline[0]])
