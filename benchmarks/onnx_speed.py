"""Batch-1 latency and accuracy of an exported model: PyTorch fp32 eager against ONNX Runtime (fp32, int8) and
OpenVINO (fp32, int8) on the same ONNX files.

Each runtime predicts the same items one at a time (batch 1, preprocessing included: tokenising a sentence or
decoding and resizing an image), median and p90 of the per-item wall time after 20 warm-up items. Accuracy is
over all the items given (SST-2: dev.csv; images: the model's recorded test split). The model folder must hold
model.onnx and model.int8.onnx (`headstart export M` and `headstart export M --quantize int8 [--force]`).

    python benchmarks/onnx_speed.py runs/sst2-ft/model --data ../shared/datasets/text/sst2/dev.csv
    python benchmarks/onnx_speed.py runs/c10-lite0/model --items 500
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_smoke_option, smoke_exported_model, start_smoke, table, write_results

import headstart
from headstart.data import load_data
from headstart.export.samples import sample
from headstart.modalities import get_modality
from headstart.runtime import load as load_graph


def _items(model, data: str | None, n: int):
    if data:
        splits = load_data(data, classes=model.classes, modality=model.modality)
        part = splits.train
    else:
        splits = model.recorded_splits()
        part = splits.test
    part = sample(part, n)
    return list(part.items), np.asarray(part.labels)


def torch_eager(model):
    """The classifier in fp32 eager mode, one item: the training side's own preprocessing, no folding."""
    modality = get_modality(model.modality)
    net = model.classifier.eval()

    @torch.inference_mode()
    def predict(item) -> np.ndarray:
        batch, _, _ = next(modality.extraction_batches(model.backbone, [item], 1))
        return torch.softmax(net(batch).float(), 1)[0].numpy()

    return predict


def graph(model_dir: Path, engine: str, int8: bool):
    g = load_graph(model_dir, engine=engine, int8=int8)
    return lambda item: g.run_prepared([g.codec.prepare(item)])[0]


def measure(name: str, predict, items, labels, warmup: int = 20) -> dict:
    for item in items[:warmup]:
        predict(item)
    times, correct = [], 0
    for item, label in zip(items, labels):
        start = time.perf_counter()
        probs = predict(item)
        times.append(time.perf_counter() - start)
        correct += int(np.argmax(probs) == label)
    times.sort()
    row = {"runtime": name, "items": len(items), "median_ms": 1000 * statistics.median(times),
           "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))], "accuracy": correct / len(items)}
    print(f"{name}: {row['median_ms']:.2f} ms median, accuracy {row['accuracy']:.4f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", help="the model folder (RUN/model); not with --smoke")
    parser.add_argument("--data", help="labeled data to measure on (default: the model's recorded test split)")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--skip", nargs="*", default=[], help="runtimes to leave out")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:
        args.model, args.items = smoke_exported_model(start_smoke()), 8
        args.skip += [name for name, engine in (("openvino fp32", "openvino"), ("openvino int8", "openvino"))
                      if importlib.util.find_spec(engine) is None]
    elif args.model is None:
        parser.error("the model folder is required (or --smoke)")
    model = headstart.load(args.model)
    items, labels = _items(model, args.data, args.items)
    runtimes = {"pytorch fp32 eager": lambda: torch_eager(model),
                "onnxruntime fp32": lambda: graph(args.model, "onnxruntime", False),
                "onnxruntime int8": lambda: graph(args.model, "onnxruntime", True),
                "openvino fp32": lambda: graph(args.model, "openvino", False),
                "openvino int8": lambda: graph(args.model, "openvino", True)}
    rows = [measure(name, make(), items, labels) for name, make in runtimes.items() if name not in args.skip]
    base = rows[0]
    for r in rows:
        r["speedup"] = base["median_ms"] / r["median_ms"]
        r["accuracy_change_points"] = 100 * (r["accuracy"] - base["accuracy"])
    print()
    print(table(rows, ["runtime", "items", "median_ms", "p90_ms", "speedup", "accuracy", "accuracy_change_points"]))
    name = Path(model.manifest.backbone_name).name.replace(":", "_")
    write_results(f"onnx_speed_{name}", {"model": str(args.model), "rows": rows,
                                                                 "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
