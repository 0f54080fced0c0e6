"""The whole model as one ONNX graph: named inputs -> backbone -> head -> the task's scores (probabilities; for
token tagging, per sub-word: batch x sequence x tags)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import HeadstartError
from ..model import TrainedModel

log = logging.getLogger("headstart")
OPSET = 18


class ProbabilityGraph(nn.Module):
    """What the exported graph computes: the inference copy of the backbone (BatchNorm folded), the head and the
    task's scores (softmax probabilities, per-label sigmoids, values in the targets' units), taking the
    backbone's named inputs as separate tensors. The output keeps the name `probabilities` for every task, so
    that graphs stay interchangeable for the runtimes; the sidecar names the task."""

    def __init__(self, model: TrainedModel):
        super().__init__()
        self.net = model.backbone.inference_copy(torch.device("cpu"), fold=True)
        self.head = model.classifier.head.eval()
        self._to_batch = model.backbone.onnx_batch  # a bound method, not a sub-module: no weights twice
        self._features = model.task.features  # one embedding per item, or one state per sub-word (tokens)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.head.scores(self._features(self.net, self._to_batch(*tensors)).float())


def _dynamic_shapes(dynamic_axes: dict[str, dict[int, str]], names: list[str]) -> tuple:
    """torch.export's form of the axes: one Dim per axis name, shared by every input that has it (the batch of
    `input_ids` and of `attention_mask` are one), packed for `forward(*tensors)`."""
    dims = {axis: torch.export.Dim(axis) for axes in dynamic_axes.values() for axis in axes.values()}
    return (tuple({i: dims[axis] for i, axis in dynamic_axes.get(name, {}).items()} for name in names),)


def _export(graph: ProbabilityGraph, example: dict[str, torch.Tensor], dynamic_axes: dict, file: Path,
            dynamo: bool, per_token: bool) -> None:
    names = list(example)
    output_axes = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}  # tokens: a row per sub-word
    shapes = ({"dynamic_shapes": _dynamic_shapes(dynamic_axes, names)} if dynamo
              else {"dynamic_axes": {**dynamic_axes, "probabilities": output_axes}})
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tuple(example.values()), str(file), input_names=names,
                          output_names=["probabilities"], opset_version=OPSET, dynamo=dynamo, external_data=False,
                          **shapes)


def export_graph(model: TrainedModel, example: dict[str, torch.Tensor], file: Path) -> str:
    """Write the graph to `file` atomically; returns the exporter used.

    The dynamo exporter first (torch.export: the supported path); where it fails on a model, the TorchScript
    exporter, which handles more Python control flow. `example` must have a batch of at least 2 (and texts at
    least 2 tokens), so that no dynamic axis is specialised to 1.
    """
    graph = ProbabilityGraph(model).eval()
    example = {k: v.contiguous() for k, v in example.items()}
    fd, tmp_name = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    errors: list[str] = []
    try:
        for dynamo in (True, False):
            try:
                _export(graph, example, model.backbone.onnx_dynamic_axes(), tmp, dynamo, model.task.per_token)
                os.replace(tmp, file)
                return "dynamo" if dynamo else "torchscript"
            except Exception as e:  # try the other exporter; report both if neither works
                first_line = str(e).splitlines()[0][:200] if str(e) else ""
                errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {first_line}")
                log.info("ONNX export failed, %s", errors[-1])
        raise HeadstartError(f"the model cannot be exported to ONNX ({'; '.join(errors)})")
    finally:
        tmp.unlink(missing_ok=True)


def example_inputs(model: TrainedModel, batch: Any) -> dict[str, torch.Tensor]:
    """The graph's named inputs for one extraction batch, on the CPU in float32/int64."""
    return {k: v.cpu() for k, v in model.backbone.onnx_inputs(batch).items()}
