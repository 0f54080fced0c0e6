"""Few labels per class: `fit --strategy prototypes` (nearest class mean) against `fit --strategy probe`, and
`fit --strategy auto`, which fits both and keeps the better on validation (strategies/auto.py, rule 3; its
contrastive rule is switched off here, so that SST-2 and TREC-6 with minilm measure that choice). Six shared sets, each a seeded
sample of at most `--items` rows: a seeded 30% is the test set (given to `fit` as `test=`), the rest the labeled
data that `fit --labels-per-class N` draws N training items per class from (and at most N per class of validation,
after its 10% cut). Every cell is the mean test accuracy of `--seeds` seeds (the seed changes which items are drawn),
all strategies on the same draws; embeddings come from headstart's cache after the first run. `--sets digits
fashion-mnist` adds two built-in sets the rule was not chosen on (lite0 on scikit-learn's 8x8 digits and on
Fashion-MNIST's training images).

  PYTHONPATH=src python benchmarks/few_labels.py                       # six sets, 1-50 per class, 3 seeds
  PYTHONPATH=src python benchmarks/few_labels.py --sets CIFAR-10 FSDD  # some of them
  PYTHONPATH=src python benchmarks/few_labels.py --sets digits fashion-mnist
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

STRATEGIES = ("probe", "prototypes", "auto")
COLUMNS = ["set", "backbone", "labels per class", "probe", "prototypes", "difference", "auto", "auto chose prototypes",
           "seconds per fit"]


def frame(items: list, labels: np.ndarray, modality: str):  # -> pd.DataFrame, or a Dataset of in-memory images
    import pandas as pd

    if modality == "image" and not isinstance(items[0], str):  # a built-in set's pixel arrays
        from headstart.data.dataset import Dataset

        classes = sorted(set(labels.tolist()))
        return Dataset("image", np.stack(items), np.searchsorted(classes, labels), [str(c) for c in classes])
    return pd.DataFrame({"text" if modality == "text" else "path": items, "label": labels})


def shortfalls(rows: list[dict]) -> list[dict]:
    """Per set, the mean accuracy points each way of choosing loses against the better of probe and prototypes in
    every cell: the probe or class means always, the tenth round's rule (class means at up to 5 labels per class),
    auto's guess alone (`prefers_class_means`), and auto as fitted (the guess, switched on a clear validation lead)."""
    from headstart.strategies.auto import prefers_class_means

    def guess(row: dict, n: int) -> float:
        return row["prototypes"] if prefers_class_means(n, n * row["classes"]) else row["probe"]

    rules = {"probe always": lambda row, n: row["probe"], "prototypes always": lambda row, n: row["prototypes"],
             "prototypes at <= 5 per class": lambda row, n: row["prototypes"] if n <= 5 else row["probe"],
             "auto's guess alone": guess, "auto": lambda row, n: row["auto"]}
    names = list(dict.fromkeys(row["set"] for row in rows))
    table_rows = []
    for rule, pick in rules.items():
        lost = {name: [max(r["probe"], r["prototypes"]) - pick(r, r["labels per class"]) for r in rows
                       if r["set"] == name] for name in names}
        every = [x for values in lost.values() for x in values]
        table_rows.append({"choice": rule, **{name: round(100 * float(np.mean(v)), 2) for name, v in lost.items()},
                           "all": round(100 * float(np.mean(every)), 2), "worst": round(100 * max(every), 1)})
    return table_rows


def builtin_sets() -> list[tuple[str, str, list, np.ndarray, str]]:
    """Sets the auto rule was not chosen on: scikit-learn's 8x8 digits and Fashion-MNIST's training images."""
    from headstart.data.builtins import BUILTINS

    rows = []
    for name in ("digits", "fashion-mnist"):
        data = BUILTINS[name]().train
        labels = np.asarray(data.classes)[data.labels]
        rows.append((name, "efficientnet_lite0", list(data.items), labels, "image"))
    return rows


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
        chosen, reasons = [], []
        started = time.perf_counter()
        for seed in range(args.seeds):
            for strategy in STRATEGIES:
                model = headstart.fit(labeled, backbone, strategy, test=held_out, labels_per_class=per_class,
                                      seed=seed, **options)
                accuracy[strategy].append(model.metrics["accuracy"])
                if strategy == "auto":
                    chosen.append(model.manifest.strategy.settings["chosen"])
                    reasons.append(model.manifest.strategy.settings["reason"])
        mean = {s: float(np.mean(v)) for s, v in accuracy.items()}
        rows.append({"set": name, "backbone": backbone, "labels per class": per_class, "classes": len(set(labels)),
                     "probe": round(mean["probe"], 4), "prototypes": round(mean["prototypes"], 4),
                     "difference": round(mean["prototypes"] - mean["probe"], 4), "auto": round(mean["auto"], 4),
                     "auto chose prototypes": f"{chosen.count('prototypes')}/{len(chosen)}",
                     "seconds per fit": round((time.perf_counter() - started) / (4 * args.seeds), 1),
                     "each seed": accuracy, "auto's choices": chosen,
                     "auto's reasons": reasons})
        print(table(rows[-1:], COLUMNS), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=8000, help="rows per set at most (seeded sample)")
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[1, 2, 3, 5, 8, 10, 15, 20, 30, 50])
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
    # auto's choice between class means and the probe is what is measured: its contrastive rule (sentence
    # encoders, up to 6 classes: SST-2 and TREC-6 with minilm) is switched off here.
    from headstart.strategies import auto

    auto.CONTRASTIVE_MAX_CLASSES = 0
    rows = []
    unseen = builtin_sets() if args.sets and {"digits", "fashion-mnist"} & set(args.sets) else []
    for name, backbone, items, labels, modality in sets(args, folder) + unseen:
        if (args.sets and name not in args.sets) or (args.smoke and modality != "text"):
            continue  # the smoke images' backbone (smallcnn) has no pre-trained weights for class means
        items, labels = subsample(items, labels, args.items, 0)
        options = {"max_length": 32} if args.smoke else {}
        rows += run_set(name, backbone, items, labels, modality, args, options)
    print(table(rows, COLUMNS))
    summary = shortfalls(rows)
    print("\nAccuracy points lost against the better of probe and prototypes, mean over each set's cells:")
    print(table(summary, list(summary[0])))
    suffix = "".join(f"_{s}" for s in args.sets or ()).replace("-", "").lower()
    _common.write_results(f"few_labels{suffix}", {"settings": vars(args), "rows": rows, "shortfalls": summary})


if __name__ == "__main__":
    main()
