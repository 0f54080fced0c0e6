"""Inference precision: fp32, bfloat16 and `auto` side by side (issue 26), per backbone family and batch size.

    python benchmarks/precision_auto.py [--single 30] [--batches 3] [--train 300] [--test 200]

For minilm (SST-2), efficientnet_lite0 (CIFAR-10) and speech_embedding (FSDD): the median time of one
`compute_embeddings` call on 1 item and on a batch of 64 (the path `predict`, `evaluate` and `serve` take, with the
model's folded inference copy), each precision in turn on the same items, interleaved so that a load change hits
all three alike; `auto` is resolved as a prediction resolves it (headstart.model.batch_precision). Then the
accuracy each precision gives: a logistic-regression probe fitted on fp32 embeddings of `--train` items, scored on
`--test` held-out items embedded in fp32, bf16 and auto (batch 64), with auto's agreement with fp32.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    add_smoke_option,
    machine,
    median,
    shared,
    smoke_audio,
    smoke_images,
    smoke_text,
    start_smoke,
    table,
    timed,
    write_results,
)

from headstart._util import cpu_bf16_kind, describe_auto
from headstart.backbones import resolve_backbone
from headstart.embeddings import compute_embeddings
from headstart.model import batch_precision

PRECISIONS = ("fp32", "bf16", "auto")


def folder_items(root: Path, per_class: int, skip: int = 0) -> tuple[list[str], list[str]]:
    """`per_class` files of each class folder under `root` (after the first `skip`), and their classes."""
    items, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.is_file())[skip:skip + per_class]
        items += [str(f) for f in files]
        labels += [folder.name] * len(files)
    return items, labels


def real_cases(n_train: int, n_test: int) -> list[dict]:
    """The three backbones of the issue with train and test items of a shared data set each."""
    import pandas as pd

    sst2_train = pd.read_csv(shared("text/sst2/train.csv")).sample(n_train, random_state=0)
    sst2_dev = pd.read_csv(shared("text/sst2/dev.csv")).iloc[:n_test]
    cases = [{"backbone": "minilm", "data": "SST-2", "train": (sst2_train.text.tolist(), sst2_train.label.tolist()),
              "test": (sst2_dev.text.tolist(), sst2_dev.label.tolist())}]
    for name, data, folder in (("efficientnet_lite0", "CIFAR-10", "images/cifar10/train"),
                               ("speech_embedding", "FSDD", "audio/fsdd/train")):
        root = shared(folder)
        per_train, per_test = n_train // 10, n_test // 10  # ten classes each
        cases.append({"backbone": name, "data": data, "train": folder_items(root, per_train),
                      "test": folder_items(root, per_test, skip=per_train)})
    return cases


def smoke_cases(folder: Path) -> list[dict]:
    """Tiny generated stand-ins: a random tiny BERT on short sentences, the random smallcnn on colour images and
    on tones."""
    import pandas as pd

    table_path, bert = smoke_text(folder / "text", per_class=6)
    texts = pd.read_csv(table_path)
    images = folder_items(smoke_images(folder / "images", per_class=4), 4)
    audio = folder_items(smoke_audio(folder / "audio", per_class=4), 4)
    cases = [{"backbone": str(bert), "modality": "text", "data": "generated", "items": (texts.text.tolist(),
                                                                                         texts.label.tolist())},
             {"backbone": "smallcnn", "modality": "image", "data": "generated", "items": images},
             {"backbone": "smallcnn", "modality": "audio", "data": "generated", "items": audio}]
    for case in cases:  # every other pair of items for training (the sentences alternate their class), the rest to test
        items, labels = case.pop("items")
        parts = [[i for i in range(len(items)) if (i // 2) % 2 == half] for half in (0, 1)]
        case["train"], case["test"] = ([([items[i] for i in part], [labels[i] for i in part]) for part in parts])
    return cases


def latency_ms(backbone, model, items: list, batch: int, calls: int) -> dict[str, float]:
    """Median ms of one call on `batch` items per precision, the precisions taking turns on the same items. Each
    call is what `predict` makes of that many items: the modality's default batch size (so one item is decoded
    in-process, a full batch of images in a worker), `auto` resolved for the items (batch_precision)."""
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    chunks = [items[(i * batch) % len(items):][:batch] for i in range(calls)]
    for chunk in [chunks[0], *chunks]:  # the first round warms each precision up and is not counted
        for precision in PRECISIONS:
            resolved = batch_precision(precision, backbone.modality, len(chunk))
            seconds, _ = timed(lambda c=chunk, r=resolved: compute_embeddings(backbone, c, None, r, model=model))
            times[precision].append(seconds * 1000)
    return {p: median(t[1:]) for p, t in times.items()}


def probe_accuracy(backbone, model, case: dict, batch: int) -> dict[str, float | str]:
    """Accuracy (%) of a probe fitted on fp32 embeddings, on the test items embedded in each precision."""
    from sklearn.linear_model import LogisticRegression

    (train, train_labels), (test, test_labels) = case["train"], case["test"]
    fitted = LogisticRegression(max_iter=2000).fit(compute_embeddings(backbone, train, batch, "fp32", model=model)[0],
                                                   train_labels)
    auto = batch_precision("auto", backbone.modality, batch, batch)
    predicted = {p: fitted.predict(compute_embeddings(backbone, test, batch, p, model=model)[0])
                 for p in ("fp32", "bf16")}
    predicted["auto"] = predicted[auto]
    result: dict[str, float | str] = {f"acc {p} %": 100 * float(np.mean(predicted[p] == np.asarray(test_labels)))
                                      for p in PRECISIONS}
    result["auto agrees with fp32 %"] = 100 * float(np.mean(predicted["auto"] == predicted["fp32"]))
    result["test items"] = len(test)
    return result


def measure(case: dict, batch: int, single: int, batches: int) -> list[dict]:
    backbone = resolve_backbone(case["backbone"], modality=case.get("modality"))
    model = backbone.inference_copy(torch.device("cpu"), fold=True)
    items = case["test"][0]
    name = Path(case["backbone"]).name if case.get("modality") != "text" else "tiny-bert"
    rows = []
    for size, calls in ((1, single), (batch, batches)):
        ms = latency_ms(backbone, model, items, size, calls)
        faster = min(ms["fp32"], ms["bf16"])
        rows.append({"backbone": name, "family": backbone.modality, "batch": size,
                     "fp32 ms": ms["fp32"], "bf16 ms": ms["bf16"], "auto ms": ms["auto"],
                     "auto is": batch_precision("auto", backbone.modality, size),
                     "auto / faster": ms["auto"] / faster})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    accuracy = probe_accuracy(backbone, model, case, batch)
    print(accuracy, flush=True)
    for row in rows:
        row |= accuracy if row["batch"] == batch else {}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=30, help="calls on one item per precision")
    parser.add_argument("--batches", type=int, default=3, help="calls on a full batch per precision")
    parser.add_argument("--batch", type=int, default=64, help="the full batch's size")
    parser.add_argument("--train", type=int, default=300, help="items the accuracy probe is fitted on")
    parser.add_argument("--test", type=int, default=200, help="held-out items the accuracy is measured on")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 keeps the ratios meaningful on a machine shared "
                             "past its cores, where threads waiting for each other dominate every call")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.smoke:
        cases = smoke_cases(start_smoke())
        args.single, args.batches, args.batch = 1, 1, 16  # fewer items than a batch: decoded in-process, no workers
    else:
        cases = real_cases(args.train, args.test)
    info = machine() | {"cpu_bf16": cpu_bf16_kind(), "load_average": os.getloadavg()}
    print(f"{info['cpu']}, {info['threads']} threads, native bfloat16: {info['cpu_bf16']}, "
          f"load average {info['load_average'][0]:.2f}", flush=True)
    rows = [row for case in cases for row in measure(case, args.batch, args.single, args.batches)]
    columns = ["backbone", "batch", "fp32 ms", "bf16 ms", "auto ms", "auto is", "auto / faster", "acc fp32 %",
               "acc bf16 %", "acc auto %", "auto agrees with fp32 %"]
    print("\n" + table(rows, columns))
    rules = {case_row["family"]: describe_auto(torch.device("cpu"), case_row["family"]) for case_row in rows}
    write_results("precision_auto", {"rows": rows, "auto_rule": rules, "settings": vars(args),
                                     "load_average_after": os.getloadavg(), "table": table(rows, columns)})


if __name__ == "__main__":
    main()
