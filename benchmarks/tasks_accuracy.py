"""Issue 22 acceptance: multi-label and regression accuracy on the shared sets. Not a test: the lead engineer runs it.

- GoEmotions (28 labels, multi-label): `fit` on train.csv with `test=` dev.csv (5,426 comments); per-label
  thresholds are tuned on the validation split `fit` cuts from train (10%, the default). minilm probe, minilm
  finetune and mpnet probe. Macro-F1, micro-F1, mAP, subset accuracy and Hamming loss on dev.
- MIML scenes (5 labels, multi-label images): efficientnet_lite0 probe on train.csv, tested on the split `fit` cuts
  from the table (20%, the default). mAP, macro-F1, Hamming loss.
- EmoBank (regression on valence, arousal, dominance): minilm probe and finetune on train.csv with `test=` dev.csv
  (1,000 sentences). Pearson r per target and the empirical coverage of the 90% split-conformal intervals on dev.

The runs go cheapest first (MIML, the EmoBank and GoEmotions probes, then the finetunes, then mpnet). Each finished
run is appended to benchmarks/out/tasks_accuracy.json with the machine and the git commit; a second invocation skips
the runs already there (resumable; `--again` reruns them). Prints Markdown tables.

  PYTHONPATH=src nice -n 5 python benchmarks/tasks_accuracy.py    # everything: hours on a shared 2-core CPU (RESULTS.md)
  PYTHONPATH=src python benchmarks/tasks_accuracy.py --only miml
  PYTHONPATH=src python benchmarks/tasks_accuracy.py --only goemotions --goemotions-epochs 2 --max-length 64
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

import _common
from _common import add_smoke_option, append_run, load_runs, quiet_fits, shared, start_smoke, table

MULTILABEL_COLUMNS = ["run", "test n", "macro-F1", "micro-F1", "mAP", "subset acc", "Hamming", "labels/item",
                      "predicted/item", "fit s"]
REGRESSION_COLUMNS = ["run", "test n", "valence r", "arousal r", "dominance r", "mean r", "coverage (90%)",
                      "coverage V/A/D", "mean width", "fit s"]


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs, cheapest first: name, data set, backbone, strategy and fit options."""
    finetune_text = {"epochs": args.goemotions_epochs, "max_length": args.max_length}
    runs = [
        {"name": "miml lite0 probe", "set": "miml", "backbone": "efficientnet_lite0", "strategy": "probe",
         "options": {}},
        {"name": "emobank minilm probe", "set": "emobank", "backbone": args.text_backbone, "strategy": "probe",
         "options": {}},
        {"name": "goemotions minilm probe", "set": "goemotions", "backbone": args.text_backbone,
         "strategy": "probe", "options": {}},
        {"name": "emobank minilm finetune", "set": "emobank", "backbone": args.text_backbone,
         "strategy": "finetune", "options": {"epochs": args.emobank_epochs, "max_length": args.max_length}},
        {"name": "goemotions minilm finetune", "set": "goemotions", "backbone": args.text_backbone,
         "strategy": "finetune", "options": finetune_text},
        {"name": "goemotions mpnet probe", "set": "goemotions", "backbone": args.mpnet_backbone,
         "strategy": "probe", "options": {}},
    ]
    if args.finetune_lr is not None:
        for run in runs:
            if run["strategy"] == "finetune":
                run["options"]["lr"] = args.finetune_lr
    return [r for r in runs if args.only in (None, r["set"]) and (not args.run or r["name"] in args.run)]


def data_for(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """fit's data arguments for one data set (the shared copies, or generated ones in a smoke run)."""
    if args.smoke:
        return args.smoke_data[name]
    if name == "goemotions":
        return {"data": shared("text/goemotions/train.csv"), "test": shared("text/goemotions/dev.csv"),
                "task": "multilabel"}
    if name == "miml":
        return {"data": shared("images/miml-scenes/train.csv"), "task": "multilabel"}
    return {"data": shared("text/emobank/train.csv"), "test": shared("text/emobank/dev.csv"), "task": "regression",
            "target": ["valence", "arousal", "dominance"]}


def subset_table(table_path: Path, rows: int, seed: int) -> Path:
    """A seeded random sample of `rows` rows of a CSV table, written beside the results (for a finetune that
    would take too long on all of them)."""
    import pandas as pd

    frame = pd.read_csv(table_path, keep_default_na=False)
    path = _common.OUT / f"{table_path.parent.name}-{table_path.stem}-{rows}-s{seed}.csv"
    frame.sample(n=min(rows, len(frame)), random_state=seed).to_csv(path, index=False)
    return path


def fit_once(run: dict[str, Any], args: argparse.Namespace, run_root: Path) -> dict[str, Any]:
    import headstart

    data = data_for(run["set"], args)
    rows = args.finetune_rows if run["strategy"] == "finetune" and not args.smoke else None
    if rows:
        data = {**data, "data": subset_table(data["data"], rows, args.seed)}
    options = dict(run["options"])
    if run["strategy"] == "finetune":
        options["out"] = run_root / run["name"].replace(" ", "-")
        options["overwrite"] = True
    started = time.perf_counter()
    extra = {k: data[k] for k in ("val_size", "test_size") if k in data}  # a smoke run's small splits
    model = headstart.fit(data["data"], run["backbone"], run["strategy"], test=data.get("test"), task=data["task"],
                          target=data.get("target"), seed=args.seed, **extra, **options)
    seconds = round(time.perf_counter() - started, 1)
    m = model.metrics
    row: dict[str, Any] = {"run": run["name"], "set": run["set"], "backbone": run["backbone"],
                           "strategy": run["strategy"], "options": run["options"], "test n": m["n"], "fit s": seconds,
                           "test": "dev.csv" if data.get("test") else "split cut from the table (20%)",
                           "training rows": f"a random {rows}" if rows else "all"}
    if data["task"] == "multilabel":
        row |= {"macro-F1": round(m["macro_f1"], 4), "micro-F1": round(m["micro_f1"], 4), "mAP": round(m["map"], 4),
                "subset acc": round(m["subset_accuracy"], 4), "Hamming": round(m["hamming_loss"], 4),
                "labels/item": round(m["labels_per_item"], 3), "predicted/item": round(m["predicted_labels_per_item"], 3),
                "per_label": m["per_label"]}
    else:
        per = m["per_target"]
        r = {name: per[name]["pearson"] for name in per}
        row |= {f"{name} r": round(v, 4) for name, v in r.items() if v is not None}
        row |= {"mean r": round(m["pearson"], 4), "coverage (90%)": round(m["interval_coverage"], 4),
                "coverage V/A/D": "/".join(f"{per[name]['interval_coverage']:.3f}" for name in per),
                "mean width": round(m["interval_width"], 4), "per_target": per}
    row["training"] = {k: model.manifest.training.get(k) for k in ("strategy", "settings", "class_weight", "finetune",
                                                                    "calibration", "task")
                       if k in model.manifest.training}
    return row


def reference_once(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The issue's references on the same splits and frozen embeddings as the probe (`--reference-backbone`, minilm
    by default; read from its cache):
    GoEmotions, scikit-learn's LogisticRegression per label with each label's F1 threshold tuned on the validation
    split (the same grid and rule as headstart's); EmoBank, RidgeCV per target. Shows what the frozen features can
    reach, apart from headstart's head training."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression, RidgeCV

    from headstart.api import prepare_splits
    from headstart.backbones import resolve_backbone
    from headstart.embedding_cache import backbone_cache
    from headstart.embeddings import embed_items
    from headstart.tasks.base import make_task
    from headstart.tasks.multilabel import MultiLabel

    data = data_for(name, args)
    task = make_task(data["task"], target=data.get("target"))
    splits = prepare_splits(data["data"], None, None, data.get("val_size", 0.1), data.get("test_size", 0.2), None,
                            args.seed, test=data.get("test"), task=task)
    net = resolve_backbone(args.reference_backbone)
    started = time.perf_counter()
    train_x, val_x = (embed_items(net, s.items, backbone_cache(net, "auto"))[0] for s in (splits.train, splits.val))
    test_x = embed_items(net, splits.test.items, backbone_cache(net, "fp32"), precision="fp32")[0]
    row: dict[str, Any] = {"run": f"{name} {args.reference_backbone} sklearn reference", "set": name,
                           "backbone": args.reference_backbone, "strategy": "reference", "test n": len(test_x)}
    if data["task"] == "multilabel":
        def probabilities(x: np.ndarray, models: list) -> np.ndarray:
            return np.stack([m.predict_proba(x)[:, 1] for m in models], 1)

        models = [LogisticRegression(max_iter=2000).fit(train_x, splits.train.labels[:, j])
                  for j in range(splits.train.labels.shape[1])]
        thresholds, _ = MultiLabel._thresholds(probabilities(val_x, models), splits.val.labels)
        m = task.metrics(splits.test.labels, probabilities(test_x, models), splits.classes,
                         {"thresholds": thresholds.tolist()})
        row["what"] = "LogisticRegression (C=1) per label, F1 thresholds tuned on the validation split"
        row |= {"macro-F1": round(m["macro_f1"], 4), "micro-F1": round(m["micro_f1"], 4), "mAP": round(m["map"], 4),
                "subset acc": round(m["subset_accuracy"], 4), "Hamming": round(m["hamming_loss"], 4),
                "labels/item": round(m["labels_per_item"], 3),
                "predicted/item": round(m["predicted_labels_per_item"], 3)}
    else:
        ridge = RidgeCV(alphas=np.logspace(-2, 3, 11)).fit(np.concatenate([train_x, val_x]),
                                                            np.concatenate([splits.train.labels, splits.val.labels]))
        predicted = ridge.predict(test_x)
        r = {c: float(np.corrcoef(splits.test.labels[:, j], predicted[:, j])[0, 1])
             for j, c in enumerate(splits.classes)}
        row["what"] = f"RidgeCV on train+validation (alpha {ridge.alpha_:.3g}), no intervals"
        row |= {f"{c} r": round(v, 4) for c, v in r.items()} | {"mean r": round(float(np.mean(list(r.values()))), 4)}
    row["fit s"] = round(time.perf_counter() - started, 1)
    return row


def tables(rows: list[dict[str, Any]]) -> str:
    multilabel = [r for r in rows if "macro-F1" in r]
    regression = [r for r in rows if "mean r" in r]
    parts = []
    if multilabel:
        parts.append(table(multilabel, MULTILABEL_COLUMNS))
    if regression:
        parts.append(table(regression, REGRESSION_COLUMNS))
    return "\n\n".join(parts)


def smoke_data(folder: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """Tiny generated stand-ins: a multi-label and a regression text table (a random tiny BERT reads them) and a
    multi-label table of 30 small images (efficientnet_lite0, as in the real run); returns (data per set, the tiny
    BERT's folder)."""
    import numpy as np
    from _common import smoke_images, smoke_text

    rng = np.random.default_rng(0)
    _, bert = smoke_text(folder / "text")
    words = ["happy", "sad", "angry", "calm"]
    tags, scores = ["text,labels"], ["text,valence,arousal,dominance"]
    for i in range(80):
        chosen = [w for w in words if rng.random() < 0.4] or [words[i % 4]]
        tags.append(f"feeling {' and '.join(chosen)} number {i},{'|'.join(chosen)}")
        v = rng.normal(3, 0.4, 3)
        scores.append(f"sentence {i} with {words[i % 4]},{v[0]:.2f},{v[1]:.2f},{v[2]:.2f}")
    (folder / "tags.csv").write_text("\n".join(tags) + "\n")
    (folder / "scores.csv").write_text("\n".join(scores) + "\n")
    images = smoke_images(folder / "images", per_class=10)
    rows = ["filename,labels"] + [f"{p.relative_to(images)},{p.parent.name}|{'bright' if i % 2 else 'dark'}"
                                  for i, p in enumerate(sorted(images.rglob("*.png")))]
    (images / "scenes.csv").write_text("\n".join(rows) + "\n")
    small = {"val_size": 12, "test_size": 12}
    data = {"goemotions": {"data": folder / "tags.csv", "task": "multilabel", **small},
            "miml": {"data": images / "scenes.csv", "task": "multilabel", **small},
            "emobank": {"data": folder / "scores.csv", "task": "regression",
                        "target": ["valence", "arousal", "dominance"], **small}}
    return data, str(bert)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["goemotions", "miml", "emobank"], help="one data set's runs")
    parser.add_argument("--goemotions-epochs", type=int, default=2,
                        help="finetune epochs on GoEmotions (39,000 training comments: 2 epochs are ~2,400 steps)")
    parser.add_argument("--emobank-epochs", type=int, default=6, help="finetune epochs on EmoBank (the default)")
    parser.add_argument("--max-length", type=int, default=64,
                        help="finetune token limit: GoEmotions comments are at most 33 words, EmoBank's 96")
    parser.add_argument("--finetune-rows", type=int,
                        help="finetune on a seeded random sample of this many training rows (default: all)")
    parser.add_argument("--finetune-lr", type=float, help="finetune learning rate (default: the backbone's)")
    parser.add_argument("--run", action="append", help="only this run, by name (e.g. 'goemotions mpnet probe'); "
                        "repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", action="store_true",
                        help="also the sklearn references on the probe's frozen embeddings (after the probes)")
    parser.add_argument("--reference-backbone", default="minilm",
                        help="whose frozen embeddings the references use: minilm (default) or mpnet")
    parser.add_argument("--again", action="store_true", help="rerun runs already in the results file")
    parser.add_argument("--name", default="tasks_accuracy", help="results file: benchmarks/out/NAME.json")
    add_smoke_option(parser)
    args = parser.parse_args()
    args.text_backbone, args.mpnet_backbone = "minilm", "mpnet"
    if args.smoke:  # generated tables and a random tiny BERT; one epoch
        folder = start_smoke()
        args.smoke_data, args.text_backbone = smoke_data(folder / "data")
        args.mpnet_backbone, args.goemotions_epochs, args.emobank_epochs = args.text_backbone, 1, 1
        args.reference_backbone = args.text_backbone
        args.reference = True
    quiet_fits(_common.OUT / "tasks-cache")
    path = _common.OUT / f"{args.name}.json"
    result = load_runs(path)
    result["commit"] = git_commit()
    done = {r["run"] for r in result["runs"]}
    for run in plan(args):
        if run["name"] in done and not args.again:
            print(f"{run['name']}: already in {path}, skipped (--again reruns it)", flush=True)
            continue
        print(f"{run['name']}: fitting ...", flush=True)
        row = fit_once(run, args, _common.OUT / "tasks-runs")
        row["commit"] = result["commit"]
        result["runs"] = [r for r in result["runs"] if r["run"] != run["name"]]
        append_run(path, result, row, tables)
        print(tables([row]), flush=True)
    for name in ("emobank", "goemotions") if args.reference else ():
        if args.only not in (None, name) or (f"{name} {args.reference_backbone} sklearn reference" in done
                                             and not args.again):
            continue
        print(f"{name}: sklearn reference ...", flush=True)
        row = reference_once(name, args) | {"commit": result["commit"]}
        result["runs"] = [r for r in result["runs"] if r["run"] != row["run"]]
        append_run(path, result, row, tables)
        print(tables([row]), flush=True)
    print("\n" + tables(result["runs"]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
