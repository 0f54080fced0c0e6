"""Issue 22 point 3: class weights on imbalanced data. Not a test: the lead engineer runs it.

An imbalanced CIFAR-10: from ../shared/datasets/images/cifar10/train, five classes keep `--majority` images
each and the other five (dog, frog, horse, ship, truck: the last five by name) 5% of that (`--minority`), drawn
with a fixed seed; `fit` cuts its stratified validation split (20%) from them, so validation is as imbalanced
as training. The test split is balanced (`--test-per-class` further images of every class, disjoint from the
training draw, given as the data's test/ folder), so that every class counts the same in its scores. A probe on
efficientnet_lite0 is fitted with `class_weight` none and balanced, for each `--seeds` (the seed draws the
validation cut and the head's initial weights; the images stay the same, so every fit after the first reads
its embeddings from the cache). Prints a Markdown table (macro-F1, accuracy, mean recall of the minority
classes and of the majority ones) and writes benchmarks/out/imbalance.json with the git commit.

  PYTHONPATH=src flock /tmp/headstart-cpu.lock python benchmarks/imbalance.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _common import add_smoke_option, quiet_fits, shared, smoke_images, start_smoke, table, write_results

COLUMNS = ["class_weight", "seed", "resolved", "imbalance ratio", "macro-F1", "accuracy", "minority recall",
           "majority recall", "fit s"]


def imbalanced_folder(source: Path, root: Path, majority: int, minority: int, test_per_class: int,
                      seed: int = 0) -> tuple[list[str], list[str]]:
    """root/train/<class>/ and root/test/<class>/ of symlinks into `source`; returns (majority, minority) classes."""
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    many, few = classes[:5], classes[5:]
    rng = np.random.default_rng(seed)
    for c in classes:
        files = sorted((source / c).iterdir())
        chosen = rng.permutation(len(files))
        n_train = majority if c in many else minority
        for split, picks in (("train", chosen[:n_train]), ("test", chosen[n_train:n_train + test_per_class])):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in picks:
                link = folder / files[i].name
                if not link.exists():
                    link.symlink_to(files[i].resolve())
    return many, few


def fit_once(root: Path, choice: str, seed: int, many: list[str], few: list[str]) -> dict[str, Any]:
    import time

    import headstart

    started = time.perf_counter()
    model = headstart.fit(root, "efficientnet_lite0", "probe", class_weight=choice, val_size=0.2, seed=seed,
                          calibrate=False)
    seconds = time.perf_counter() - started
    m, record = model.metrics, model.manifest.training["class_weight"]
    recall = {c: v["recall"] for c, v in m["per_class"].items()}
    return {"class_weight": choice, "seed": seed, "resolved": record["resolved"],
            "imbalance ratio": record["imbalance_ratio"], "macro-F1": round(m["macro_f1"], 4),
            "accuracy": round(m["accuracy"], 4),
            "minority recall": round(statistics.mean(recall[c] for c in few), 4),
            "majority recall": round(statistics.mean(recall[c] for c in many), 4),
            "fit s": round(seconds, 1), "test n": m["n"], "per_class_recall": recall,
            "class_counts": record["class_counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--majority", type=int, default=300, help="training+validation images of each large class")
    parser.add_argument("--minority", type=int, default=15, help="of each small class (5%% of 300)")
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # ten generated classes of 14 small images instead of CIFAR-10, one seed
        source = smoke_images(start_smoke() / "ten-classes", per_class=14, classes=tuple(f"c{i}" for i in range(10)))
        args.majority, args.minority, args.test_per_class, args.seeds = 10, 4, 2, [0]
    quiet_fits(_common.OUT / "imbalance-cache")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    root = _common.OUT / f"imbalance-data-{args.majority}-{args.minority}-{args.test_per_class}"
    many, few = imbalanced_folder(source if args.smoke else shared("images/cifar10/train"), root, args.majority, args.minority,
                                  args.test_per_class)
    rows = []
    for seed in args.seeds:
        for choice in ("none", "balanced"):
            rows.append(fit_once(root, choice, seed, many, few))
            print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    means = []
    for choice in ("none", "balanced"):
        mine = [r for r in rows if r["class_weight"] == choice]
        means.append({"class_weight": choice, "seed": "mean", "resolved": mine[0]["resolved"],
                      "imbalance ratio": mine[0]["imbalance ratio"],
                      **{k: round(statistics.mean(r[k] for r in mine), 4)
                         for k in ("macro-F1", "accuracy", "minority recall", "majority recall", "fit s")}})
    text = table(rows + means, COLUMNS)
    print(text)
    write_results("imbalance", {"commit": commit, "args": vars(args), "majority_classes": many,
                                "minority_classes": few, "threads": os.environ.get("OMP_NUM_THREADS"),
                                "runs": rows, "means": means, "table": text})


if __name__ == "__main__":
    main()
