"""What `--strategy auto` chooses on the selection benchmark's data sets, and (with --fit) how it compares.

Without --fit: for each data set and labels-per-class setting, the backbone is loaded and `choose_strategy`
gives the choice and its one-line reason (seconds per row; no training). With --fit: `headstart.fit` with auto,
probe and finetune on the same draw (seed 0), test accuracy of each, so that auto can be checked against the
worse of probe and finetune. Where auto chooses probe or finetune it runs exactly that strategy with the same
seed, so only its contrastive and lora choices need measuring. Rows go to benchmarks/out/auto_strategy.json.

  python benchmarks/auto_strategy.py                       # the choices
  python benchmarks/auto_strategy.py --fit --sets sst2-8   # measure one row
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402
from _common import SHARED, add_smoke_option, smoke_images, smoke_text, start_smoke  # noqa: E402

# name -> (data, backbone, labels per class or None for all); the text and image sets of the selection benchmark.
SETS = {
    "cifar10-10": ("images/cifar10/train", "efficientnet_lite0", 10),
    "cifar10-500": ("images/cifar10/train", "efficientnet_lite0", 500),
    "fashion-mnist-10": ("fashion-mnist", "efficientnet_lite0", 10),
    "digits-all": ("digits", "efficientnet_lite0", None),
    "hymenoptera-all": ("images/hymenoptera", "efficientnet_lite0", None),
    "sst2-8": ("text/sst2", "minilm", 8),
    "sst2-64": ("text/sst2", "minilm", 64),
    "sst2-all": ("text/sst2", "minilm", None),
    "sst2-8-mpnet": ("text/sst2", "mpnet", 8),
    "sst2-all-mpnet": ("text/sst2", "mpnet", None),
    "trec6-8": ("text/trec6/train.csv", "minilm", 8),
    "trec6-all": ("text/trec6/train.csv", "minilm", None),
    "banking77-8": ("text/banking77/train.csv", "minilm", 8),
    "banking77-all": ("text/banking77/train.csv", "minilm", None),
}


def data_path(data: str) -> str:
    return data if data in ("digits", "fashion-mnist") or Path(data).is_absolute() else str(SHARED / data)


def add_smoke_sets(folder: Path) -> str:
    """Two generated sets (sentences on a tiny BERT, colour images on the random smallcnn) for --smoke."""
    table_path, bert = smoke_text(folder / "text", per_class=12)
    SETS["smoke-text-4"] = (str(table_path), str(bert), 4)
    SETS["smoke-images-all"] = (str(smoke_images(folder / "images", per_class=8)), "smallcnn", None)
    return "smoke-text-4,smoke-images-all"


def choice(name: str) -> dict:
    import numpy as np

    from headstart.backbones import resolve_backbone
    from headstart.data import load_data, make_splits
    from headstart.strategies.auto import choose_strategy

    data, backbone, n = SETS[name]
    splits = make_splits(load_data(data_path(data)), labels_per_class=n, seed=0)
    net = resolve_backbone(backbone, modality=splits.modality)
    median = float(np.median(list(splits.train.class_counts().values())))
    strategies, reason = choose_strategy(net, median, len(splits.classes), len(splits.train))
    return {"set": name, "backbone": backbone, "labels_per_class": n, "median_labels": median,
            "choice": " or ".join(strategies) + (" (the better on validation)" if len(strategies) > 1 else ""),
            "reason": reason}


def fit_all(name: str, out: Path) -> dict:
    import headstart

    data, backbone, n = SETS[name]
    accuracy = {}
    for strategy in ("auto", "probe", "finetune"):
        model = headstart.fit(data_path(data), backbone, strategy, labels_per_class=n, seed=0,
                              out=out / "auto_runs" / f"{name}-{strategy}", overwrite=True)
        accuracy[strategy] = model.metrics["accuracy"]
    return {"accuracy": accuracy, "auto_at_least_worse": accuracy["auto"] >= min(accuracy["probe"],
                                                                                 accuracy["finetune"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--fit", action="store_true")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # the choices on two generated sets (the default run's path; --fit adds three fits per set)
        args.sets = add_smoke_sets(start_smoke())
    OUT = _common.OUT
    os.environ.setdefault("HEADSTART_CACHE", str(OUT / "cache"))
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    path = OUT / "auto_strategy.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    print("| data set | backbone | labels/class (median) | auto's choice | reason |\n|---|---|---|---|---|")
    for name in args.sets.split(","):
        row = choice(name)
        if args.fit:
            row.update(fit_all(name, OUT))
        rows = [r for r in rows if r["set"] != name] + [row]
        print(f"| {name} | {row['backbone']} | {row['median_labels']:g} | {row['choice']} | {row['reason']} |",
              flush=True)
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
