"""Fine-tuning speed at fp32 against bfloat16 mixed precision, with the accuracy each reaches.

    python benchmarks/finetune_speed.py [--epochs 2] [--cifar-per-class 100]

minilm on SST-2 (the training sentences; test = dev.csv) and efficientnet_lite0 on CIFAR-10 (`--cifar-per-class`
training images per class; 1,000 held-out test images), each through `headstart.fit(strategy="finetune")`, once
with precision="fp32" and once with "bf16", side by side in one run. samples/s counts training samples over the
whole stage-2 time (validation passes included).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import add_smoke_option, shared, smoke_images, start_smoke, table, write_results

import headstart


def run(name: str, data, backbone: str, precision: str, epochs: int, evaluate_on=None, **options) -> dict:
    start = time.perf_counter()
    model = headstart.fit(data, backbone, "finetune", out=_common.OUT / f"ft-{name}-{precision}", epochs=epochs,
                          precision=precision, **options)
    wall = time.perf_counter() - start
    stage = model.manifest.training["finetune"]
    train_n = model.manifest.data.splits["train"]
    seconds = model.manifest.timings["train"] - model.manifest.timings.get("head_stage", 0.0)  # stage 2 only
    accuracy = model.evaluate(evaluate_on)["accuracy"] if evaluate_on else model.metrics["accuracy"]
    return {"task": name, "precision": precision, "train_samples": train_n, "epochs": stage["epochs_run"],
            "finetune_s": seconds, "samples_per_s": train_n * stage["epochs_run"] / seconds,
            "accuracy": accuracy, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cifar-per-class", type=int, default=100)
    parser.add_argument("--tasks", default="sst2,cifar10")
    add_smoke_option(parser)
    args = parser.parse_args()
    rows = []
    if args.smoke:  # the random smallcnn on generated images, one epoch per precision, instead of the real tasks
        images, args.tasks, args.epochs = smoke_images(start_smoke() / "images"), "", 1
        rows += [run("smoke-smallcnn", images, "smallcnn", precision, 1, val_size=6, test_size=6)
                 for precision in ("fp32", "bf16")]
    for precision in ("fp32", "bf16"):
        if "sst2" in args.tasks:
            train = shared("text/sst2/train.csv")
            rows.append(run("sst2-minilm", train, "minilm", precision, args.epochs,
                            evaluate_on=train.with_name("dev.csv")))
            print(rows[-1], flush=True)
        if "cifar10" in args.tasks:
            rows.append(run("cifar10-efficientnet_lite0", shared("images/cifar10/train"), "efficientnet_lite0",
                            precision, args.epochs, labels_per_class=args.cifar_per_class, test_size=1000))
            print(rows[-1], flush=True)
    rows.sort(key=lambda r: r["task"])
    print(table(rows, ["task", "precision", "train_samples", "epochs", "finetune_s", "samples_per_s", "accuracy"]))
    write_results("finetune_speed", {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    main()
