"""Issue 24, label errors beyond the acceptance sets: does `audit`'s rule hold on data it was not tuned on?

For each data set, a seeded share of the labels (`--noise`, default 5%, 10% and 20%) is flipped, each to another
class at random; audit's label-error step (`probe_judgement`, then `confident_learning`) runs on the cached
embeddings, and the table compares precision and recall of:
- `issues`: everything confident learning (cleanlab) flags: what audit reported as label errors before;
- `likely errors`: the issues whose given label the probe rates below chance (1 / the number of classes): what audit
  reports as likely label errors now (the others are listed as ambiguous);
- `best cut`: the best precision among the cuts of audit's ranking (least likely label first) whose recall is at least
  0.6: what any threshold on this ranking could reach.

Sets (shared data; at most `--items` rows each, seeded): CIFAR-10 train (efficientnet_lite0), hymenoptera train
(efficientnet_lite0), SST-2 train (minilm), TREC-6 (minilm), Banking77 (minilm), FSDD (speech_embedding).

With `--strategy NAME` each set and noise also gets a row judged by that `fit` strategy fitted on the other folds
(audit's `strategy=`; `--epochs` its epochs), beside the probe's row: one fit per fold, so minutes per row.

  PYTHONPATH=src python benchmarks/label_errors_sets.py          # embeddings cached after the first run
  PYTHONPATH=src python benchmarks/label_errors_sets.py --sets TREC-6 --noise 0.1 --strategy finetune --epochs 3
  PYTHONPATH=src python benchmarks/label_errors_sets.py --smoke
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _common import add_smoke_option, quiet_fits, shared, start_smoke, table
from audit_quality import best_cut, ranking_curve

COLUMNS = ["set", "backbone", "judge", "classes", "items", "noise", "flipped", "issues", "issues precision", "issues recall",
           "likely errors", "precision", "recall", "best cut precision"]


def labeled_items(path: Path) -> tuple[list[str], np.ndarray]:
    """(items, class names) of labeled data as `fit` and `audit` read it (a folder of class folders, a table)."""
    from headstart.data import load_data

    train = load_data(path).train
    return [str(item) for item in train.items], np.asarray(train.classes)[train.labels]


def subsample(items: list, labels: np.ndarray, limit: int, seed: int) -> tuple[list, np.ndarray]:
    if len(items) <= limit:
        return items, labels
    rows = np.sort(np.random.default_rng(seed).choice(len(items), limit, replace=False))
    return [items[i] for i in rows], labels[rows]


def flip(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, set[int]]:
    """`labels` with a seeded `share` of them changed to another class at random, and the changed rows."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    rows = rng.choice(len(labels), round(share * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[rows] = [rng.choice(classes[classes != label]) for label in labels[rows]]
    return noisy, set(rows.tolist())


def score(found: set[int], flipped: set[int]) -> tuple[int, float, float]:
    hits = len(found & flipped)
    return len(found), round(hits / max(len(found), 1), 3), round(hits / max(len(flipped), 1), 3)


def run_set(name: str, backbone: str, x: np.ndarray, labels: np.ndarray, noise: float, seed: int,
            judge: tuple[str, dict[str, Any], list] | None = None) -> dict[str, Any]:
    """One row: the flipped labels found by audit's probe on the embeddings `x`, or with `judge` (strategy,
    settings, the items) by that strategy fitted on the other folds."""
    from headstart.auditing.data_audit import Judge
    from headstart.auditing.label_errors import confident_learning
    from headstart.options import BackboneOptions, RunOptions

    noisy, flipped = flip(labels, noise, seed)
    classes = sorted(set(labels))
    given = np.searchsorted(classes, noisy)
    strategy, settings, items = judge or (None, {}, [])
    probs, judged_by = Judge(strategy, settings).probabilities(items, given, classes, x, BackboneOptions(name=backbone),
                                                               RunOptions(seed=seed))
    found = confident_learning(given, probs, classes, judged_by)
    issues = set(found.flagged.tolist()) | set(found.ambiguous.tolist())
    n_issues, issue_p, issue_r = score(issues, flipped)
    n_likely, p, r = score(set(found.flagged.tolist()), flipped)
    return {"set": name, "backbone": backbone, "judge": judge[0] if judge else "probe (audit's default)",
            "classes": len(classes), "items": len(labels), "noise": noise,
            "flipped": len(flipped), "issues": n_issues, "issues precision": issue_p, "issues recall": issue_r,
            "likely errors": n_likely, "precision": p, "recall": r,
            "best cut precision": best_cut(*ranking_curve(found.probabilities, given, flipped))}


def sets(args: argparse.Namespace, folder: Path | None) -> list[tuple[str, str, list, np.ndarray, str]]:
    """(name, backbone, items, labels, modality) of each set."""
    if args.smoke:
        table_path, bert = _common.smoke_text(folder / "text", per_class=40)
        images = _common.smoke_images(folder / "images", per_class=20)
        return [("smoke text", str(bert), *labeled_items(table_path), "text"),
                ("smoke images", "smallcnn", *labeled_items(images), "image")]
    return [("CIFAR-10", "efficientnet_lite0", *labeled_items(shared("images/cifar10/train")), "image"),
            ("hymenoptera", "efficientnet_lite0", *labeled_items(shared("images/hymenoptera/train")), "image"),
            ("SST-2", "minilm", *labeled_items(shared("text/sst2/train.csv")), "text"),
            ("TREC-6", "minilm", *labeled_items(shared("text/trec6/train.csv")), "text"),
            ("Banking77", "minilm", *labeled_items(shared("text/banking77/train.csv")), "text"),
            ("FSDD", "speech_embedding", *labeled_items(shared("audio/fsdd/train")), "audio")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=3000, help="rows per set at most (seeded sample)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=None, help="only these sets (by name, e.g. TREC-6 SST-2)")
    parser.add_argument("--strategy", default=None, help="also judge by this fit strategy on the other folds")
    parser.add_argument("--epochs", type=int, default=None, help="the --strategy's epochs (default: its own)")
    add_smoke_option(parser)
    args = parser.parse_args()
    folder = start_smoke() if args.smoke else None
    if not args.smoke:
        quiet_fits(_common.OUT / "cache")
    from suggest_curves import embedded

    rows = []
    settings = {"epochs": args.epochs} if args.epochs else {}
    for name, backbone, items, labels, modality in sets(args, folder):
        if args.sets and name not in args.sets:
            continue
        items, labels = subsample(items, labels, args.items, args.seed)
        size = {"image_size": 32} if args.smoke and modality == "image" else {}
        x = embedded(backbone, items, modality, **size)
        for noise in args.noise:
            rows.append(run_set(name, backbone, x, labels, noise, args.seed))
            if args.strategy:
                rows.append(run_set(name, backbone, x, labels, noise, args.seed,
                                    (args.strategy, {**settings, **size}, items)))
            print(table(rows[-1 - bool(args.strategy):], COLUMNS), flush=True)
    print(table(rows, COLUMNS))
    name = "label_errors_sets" + "".join(f"_{part}" for part in (args.strategy, *(args.sets or ())) if part)
    _common.write_results(name.replace("-", "").lower(), {"settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
