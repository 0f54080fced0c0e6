"""Few labels per class: `fit --strategy prototypes` (nearest class mean) against `fit --strategy probe`.

What `auto`'s prototypes rule (strategies/auto.py, PROTOTYPES_MAX_LABELS) rests on. Six shared sets, each a seeded
sample of at most `--items` rows: a seeded 30% is the test set (given to `fit` as `test=`), the rest the labeled
data that `fit --labels-per-class N` draws N training items per class from (and at most N per class of validation,
after its 10% cut). Every cell is the mean test accuracy of `--seeds` seeds (the seed changes which items are drawn),
both strategies on the same draws; embeddings come from headstart's cache after the first run.

  PYTHONPATH=src python benchmarks/few_labels.py                       # six sets, 1-20 per class, 3 seeds
  PYTHONPATH=src python benchmarks/few_labels.py --sets CIFAR-10 FSDD  # some of them
  PYTHONPATH=src python benchmarks/few_labels.py --smoke
"""

from __future__ import annotations

import argparse
import logging
import time

import _common
import numpy as np
from _common import add_smoke_option, quiet_fits, start_smoke, table
from label_errors_sets import sets, subsample

STRATEGIES = ("probe", "prototypes")
COLUMNS = ["set", "backbone", "labels per class", "probe", "prototypes", "difference", "seconds per fit"]


def frame(items: list, labels: np.ndarray, modality: str):  # -> pd.DataFrame
    import pandas as pd

    return pd.DataFrame({"text" if modality == "text" else "path": items, "label": labels})


def run_set(name: str, backbone: str, items: list, labels: np.ndarray, modality: str, args: argparse.Namespace,
            options: dict) -> list[dict]:
    import headstart

    test = np.zeros(len(items), dtype=bool)
    test[np.random.default_rng(0).choice(len(items), int(0.3 * len(items)), replace=False)] = True
    labeled = frame([i for i, t in zip(items, test) if not t], labels[~test], modality)
    held_out = frame([i for i, t in zip(items, test) if t], labels[test], modality)
    smallest = int(min(np.unique(labels[~test], return_counts=True)[1]))
    rows = []
    for per_class in args.labels_per_class:
        if 2 * per_class > smallest:  # training and validation draw N per class each
            break
        accuracy: dict[str, list[float]] = {s: [] for s in STRATEGIES}
        started = time.perf_counter()
        for seed in range(args.seeds):
            for strategy in STRATEGIES:
                model = headstart.fit(labeled, backbone, strategy, test=held_out, labels_per_class=per_class,
                                      seed=seed, **options)
                accuracy[strategy].append(model.metrics["accuracy"])
        mean = {s: float(np.mean(v)) for s, v in accuracy.items()}
        rows.append({"set": name, "backbone": backbone, "labels per class": per_class,
                     "probe": round(mean["probe"], 4), "prototypes": round(mean["prototypes"], 4),
                     "difference": round(mean["prototypes"] - mean["probe"], 4),
                     "seconds per fit": round((time.perf_counter() - started) / (2 * args.seeds), 1),
                     "each seed": accuracy})
        print(table(rows[-1:], COLUMNS), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=8000, help="rows per set at most (seeded sample)")
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sets", nargs="+", default=None, help="only these sets (by name, e.g. CIFAR-10 FSDD)")
    add_smoke_option(parser)
    args = parser.parse_args()
    folder = start_smoke() if args.smoke else None
    if args.smoke:
        args.labels_per_class, args.seeds = [1, 3], 1
    else:
        quiet_fits(_common.OUT / "cache")
    logging.getLogger("headstart").setLevel(logging.ERROR)  # a split plan per fit would bury the table
    rows = []
    for name, backbone, items, labels, modality in sets(args, folder):
        if (args.sets and name not in args.sets) or (args.smoke and modality != "text"):
            continue  # the smoke images' backbone (smallcnn) has no pre-trained weights for class means
        items, labels = subsample(items, labels, args.items, 0)
        options = {"max_length": 32} if args.smoke else {}
        rows += run_set(name, backbone, items, labels, modality, args, options)
    print(table(rows, COLUMNS))
    suffix = "".join(f"_{s}" for s in args.sets or ()).replace("-", "").lower()
    _common.write_results(f"few_labels{suffix}", {"settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
