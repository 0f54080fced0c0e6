"""`export_onnx`: the whole classifier as an ONNX graph, checked against PyTorch on real items before it is kept.

Steps: rebuild the model's splits from its manifest; decode up to 500 validation items once; export
(backbone + head + softmax, dynamic batch and sequence axes); run PyTorch fp32 and ONNX Runtime on the same
tensors and require max |p_onnx - p_torch| <= 1e-4 and identical top-1 (else an error, and no graph is kept).
With `quantize="int8"`, the checked fp32 graph (the model folder's model.onnx when an earlier export wrote it:
checked again, not exported again) is quantized the backbone family's way and its accuracy on the
test split is compared with the fp32 graph's; a drop above `max_drop` points is refused unless `force`.
The graph's sidecar JSON (`model.onnx.json`) records classes, preprocessing, parity and the int8 change; files
the preprocessing needs (a tokenizer) are written beside it. Load it with `headstart.runtime.load`.
A token tagger's graph gives tag probabilities per sub-word; it is checked on the task's windows of validation
sentences, and its int8 change is the change of entity F1 (the headline metric) on the test sentences.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._util import atomic_write_json, check_writable, installed_versions
from ..errors import ArtifactError, HeadstartError, SettingsError
from ..model import TrainedModel
from ..runtime.onnx_model import GRAPH, INT8_GRAPH
from ..runtime.sidecar import OnnxManifest, read_sidecar, sidecar_path
from . import parity
from .graph import export_graph
from .quantize import MAX_ACCURACY_DROP
from .quantize import quantize as quantize_graph
from .samples import sample

log = logging.getLogger("headstart")
QUANTIZE_CHOICES = (None, "int8")
PARITY_ITEMS = 500
ACCURACY_ITEMS = 2000  # test items for the int8 accuracy change (a sample, seeded, when the split is larger)
CALIBRATION_ITEMS = 256
FEW_ACCURACY_ITEMS = 100  # below this, one test item moves the int8 accuracy change by more than a point

__all__ = ["ExportReport", "export_onnx"]


@dataclass
class ExportReport:
    graph: Path
    sidecar: Path
    exporter: str
    parity: dict[str, Any]
    quantization: dict[str, Any] | None
    seconds: float


def _target(model_dir: Path, out: str | Path | None, quantize: str | None) -> Path:
    if out is None:
        return model_dir / (INT8_GRAPH if quantize else GRAPH)
    out = Path(out).expanduser()
    if out.is_dir():
        raise SettingsError(f"--out {out} is a folder: give a file name such as {out / GRAPH}")
    if out.suffix != ".onnx":
        raise SettingsError(f"--out {out}: the file name must end in .onnx")
    return out


def _check_replaceable(target: Path, beside: dict[str, bytes]) -> None:
    """An --out file that exists is replaced only when it is a graph headstart exported (its description beside
    it); the description's name and files written beside the graph (a tokenizer) likewise, unless unchanged."""
    try:
        ours = target.is_file() and read_sidecar(target).format == "headstart-onnx"
    except ArtifactError:
        ours = False
    if ours:
        return
    at_risk = [f for f in (target, sidecar_path(target)) if f.exists()]
    at_risk += [target.parent / name for name, content in beside.items()
                if (target.parent / name).exists() and (target.parent / name).read_bytes() != content]
    if at_risk:
        raise SettingsError(f"--out {target}: {', '.join(str(f) for f in at_risk)} "
                            f"{'exists' if len(at_risk) == 1 else 'exist'} and headstart did not export "
                            f"{'it' if len(at_risk) == 1 else 'them'}: give a new file name (nothing was replaced)")


def _check_options(parity_items: int, max_drop: float) -> None:
    if isinstance(parity_items, bool) or not isinstance(parity_items, int) or parity_items < 2:
        raise SettingsError(f"--parity-items must be a whole number >= 2, got {parity_items}")
    if not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop):
        raise SettingsError(f"--max-drop must be a number of accuracy points (e.g. 1.0), got {max_drop}")


def _warn_if_few_test_items(quant: dict[str, Any]) -> None:
    n = quant["test_items"]
    if n < FEW_ACCURACY_ITEMS:
        log.warning("the int8 accuracy change was measured on only %d test item(s): one item moves it by %.1f "
                    "points, so the --max-drop guard says little; check on more data with --data", n, 100 / max(n, 1))


def _check_parity(model: TrainedModel, graph: Path, inputs: parity.Inputs, source: str) -> dict[str, Any]:
    reference = parity.torch_probabilities(model, inputs)
    allowed = parity.MAX_ABS_DIFF * model.task.score_scale(model.task_params)  # scores in the targets' units
    result = {"items": len(inputs.labels), "source": source, "skipped": inputs.skipped, "reference": "pytorch fp32 eager",
              "reference_precision": parity.REFERENCE_PRECISION,
              **parity.compare(model, reference, parity.graph_probabilities(graph, inputs.feeds)),
              "max_abs_diff_allowed": allowed}
    if model.task.per_token:  # the rows compared: every real sub-word of the sentences' windows
        result["sub_words"] = len(reference)
    if not (result["max_abs_diff"] <= allowed and result["top1_agreement"] == 1.0):
        raise HeadstartError(
            f"the exported graph does not predict what the model does on {result['items']} {source} items: max "
            f"score difference {result['max_abs_diff']:.2g} (allowed {allowed:g}), agreement of the predictions "
            f"{result['top1_agreement']:.2%} (100% required); no graph was written")
    return result


def _reusable_fp32_graph(model_dir: Path, model: TrainedModel) -> tuple[Path, str] | None:
    """RUN/model/model.onnx with its description, when an earlier `export` wrote it for this model's classes."""
    graph = model_dir / GRAPH
    if not graph.is_file():
        return None
    try:
        described = read_sidecar(graph)
    except HeadstartError:
        return None
    if (described.precision != "fp32" or described.classes != model.classes
            or (described.task, described.task_params) != (model.task_name, model.classifier.head.config["task_params"])):
        return None
    return graph, str(described.parity.get("exporter", "dynamo"))


def _checked_fp32_graph(model: TrainedModel, model_dir: Path, inputs: parity.Inputs, source: str, folder: Path,
                        reuse: bool) -> tuple[Path, str, dict[str, Any]]:
    """(graph, exporter, parity) of an fp32 graph that passed the parity check against PyTorch now. With `reuse`
    (int8, which quantizes it) the model folder's model.onnx from an earlier `export` is checked and used, so
    `export` then `export --quantize int8` exports once; a graph that fails the check there is exported afresh."""
    reusable = _reusable_fp32_graph(model_dir, model) if reuse else None
    if reusable is not None:
        graph, exporter = reusable
        try:
            result = _check_parity(model, graph, inputs, source)
            log.info("quantizing %s, the fp32 graph an earlier export wrote (its parity with PyTorch checked again)",
                     graph)
            return graph, exporter, result
        except HeadstartError:
            log.info("%s no longer predicts what the model does: exporting afresh", graph)
    import torch

    graph = folder / GRAPH
    first = {k: torch.from_numpy(v[:2]) for k, v in inputs.feeds[-1].items()}
    exporter = export_graph(model, first, graph)
    return graph, exporter, _check_parity(model, graph, inputs, source)


def _int8(model: TrainedModel, fp32: Path, int8: Path, splits, force: bool, max_drop: float) -> dict[str, Any]:
    calibration = parity.prepare(model, sample(splits.train, CALIBRATION_ITEMS)).feeds
    record = quantize_graph(fp32, int8, model.backbone.int8_method, calibration)
    test = sample(splits.test or splits.val, ACCURACY_ITEMS, seed=1)
    inputs = parity.prepare(model, test)
    fp32_acc = parity.graph_headline(model, fp32, inputs)
    int8_acc = parity.graph_headline(model, int8, inputs)
    drop = round(100 * (fp32_acc - int8_acc), 2)
    record |= {"test_items": len(inputs.labels), "accuracy_fp32": round(fp32_acc, 4), "accuracy_int8": round(int8_acc, 4),
               "metric": model.task.headline[0],
               "drop_points": drop, "max_drop_points": max_drop, "forced": False,
               "size_fp32_mb": round(fp32.stat().st_size / 1e6, 2), "size_int8_mb": round(int8.stat().st_size / 1e6, 2)}
    if drop > max_drop:
        metric = "accuracy" if model.task.headline[0] == "accuracy" else f"{model.task.headline[0]} (the headline)"
        message = (f"int8 loses {drop:.1f} points of {metric} on {len(inputs.labels)} test items ({fp32_acc:.2%} -> "
                   f"{int8_acc:.2%}; the limit is {max_drop:g})")
        if not force:
            raise HeadstartError(message + ": no int8 graph was written; keep the fp32 graph, or add --force to "
                                 "write it anyway")
        log.warning("%s; written anyway (--force)", message)
        record["forced"] = True
    return record


def export_onnx(model_dir: str | Path, out: str | Path | None = None, quantize: str | None = None,
                data: str | Path | None = None, force: bool = False, parity_items: int = PARITY_ITEMS,
                max_drop: float = MAX_ACCURACY_DROP) -> ExportReport:
    """Export a saved model folder to ONNX (default RUN/model/model.onnx, or model.int8.onnx with
    `quantize="int8"`), check it against PyTorch and record the result beside it. `data`: labeled data to check
    on when the model's own data are not where its manifest says (they are split the way training split them)."""
    if quantize not in QUANTIZE_CHOICES:
        raise SettingsError(f"--quantize must be int8 (or omitted), got '{quantize}'")
    _check_options(parity_items, max_drop)
    started = time.perf_counter()
    model_dir = Path(model_dir).expanduser()
    model = TrainedModel.load(model_dir)
    target = _target(model_dir, out, quantize)
    if out is not None:
        _check_replaceable(target, model.backbone.onnx_files())
    check_writable(target.parent, f"--out {target}")
    splits = model.recorded_splits(data)
    check, source = (splits.val, "validation") if splits.val is not None and len(splits.val) else (splits.test, "test")
    inputs = parity.prepare(model, sample(check, parity_items))
    if not inputs.batches or len(inputs.labels) < 2:
        raise HeadstartError(f"fewer than 2 readable {source} items to check the export on: pass --data")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        fp32, exporter, result = _checked_fp32_graph(model, model_dir, inputs, source, Path(tmp), reuse=bool(quantize))
        quant = None
        if quantize:
            quant = _int8(model, fp32, Path(tmp) / INT8_GRAPH, splits, force, max_drop)
            _warn_if_few_test_items(quant)
        _publish(model, Path(tmp) / (INT8_GRAPH if quantize else GRAPH), target, exporter, result, quant)
    return ExportReport(target, sidecar_path(target), exporter, result, quant, round(time.perf_counter() - started, 2))


def _publish(model: TrainedModel, built: Path, target: Path, exporter: str, result: dict, quant: dict | None) -> None:
    """Files beside the graph, then the graph, then its sidecar: each replaced atomically."""
    backbone = model.backbone
    for name, content in backbone.onnx_files().items():
        tmp = target.parent / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, target.parent / name)
    manifest = OnnxManifest(
        graph=target.name, modality=model.modality, classes=model.classes, backbone_name=model.manifest.backbone_name,
        inputs=list(backbone.onnx_dynamic_axes()), preprocessing=backbone.onnx_preprocessing(),
        precision="int8" if quant else "fp32", parity={**result, "exporter": exporter}, quantization=quant,
        task=model.task_name, task_params=model.classifier.head.config["task_params"],
        metrics={k: v for k, v in model.metrics.items() if isinstance(v, (int, float, str))},
        versions=installed_versions("headstart", "torch", "onnx", "onnxruntime", "onnxscript"),
        exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    os.replace(built, target)
    atomic_write_json(sidecar_path(target), manifest.model_dump(mode="json"))
