"""Selection quality and speed (issue 13). Not a test: the lead engineer runs it.

For each data set and candidate backbone:
  1. `headstart.select` scores every candidate on one class-balanced subsample of the training split (LogME and
     leave-one-out kNN accuracy; --per-class items per class);
  2. `headstart.fit` with its default strategy (probe) trains each candidate on the whole training split (10%
     held out for validation, as fit does) and measures accuracy on a disjoint test split (it finds select's
     embeddings in the cache, under OUT/cache, and embeds the rest);
  3. the weighted Kendall tau (scipy.stats.weightedtau, hyperbolic weights, as the LogME paper) between the
     selection score and the test accuracy, per data set; its mean; and the time of `select` against the time
     of the fits it replaces, measured in the same run on the same machine.

Images: CIFAR-10, Fashion-MNIST, digits, hymenoptera (ants vs bees); candidates efficientnet_lite0/1/2, a smallcnn
pretrained here with `headstart pretrain` (SimCLR on 10,000 unlabeled CIFAR-10 images, 32 px, a time budget)
and a random-init control (efficientnet_lite0's architecture with random weights, saved as a backbone folder).
Text: SST-2, TREC-6, Banking77; candidates minilm, minilm continued with MLM by `headstart pretrain` on the three
training sets' texts, and a random-init control (MiniLM's architecture and tokenizer, random weights). More
text encoders join by name: `--text-backbones minilm,mlm-minilm,random-minilm,mpnet` (any name `fit` takes).

Rows are appended to OUT/rows.jsonl as they finish, so an interrupted run resumes where it stopped. The speed
figure comes from `--sets sst2-full --lock`: all 6,920 SST-2 training sentences, select's default subsample
(50 per class) against a probe fit of each candidate, both without the cache; --lock holds
/tmp/headstart-cpu.lock over each set's select and fits (the machine is shared).

  python benchmarks/selection.py                                  # selection quality, 7 sets, ~45 min on 2 cores
  python benchmarks/selection.py --sets sst2-full --lock          # the speed figure, ~10 min
  python benchmarks/selection.py --sets digits,sst2               # a subset
  python benchmarks/selection.py --summary                        # the tables from the rows already there
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import statistics
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import _common
import numpy as np
from _common import OUT, SHARED, add_smoke_option, machine, smoke_text, start_smoke, table

IMAGE_SETS = ("cifar10", "fashion-mnist", "digits", "hymenoptera")
TEXT_SETS = ("sst2", "trec6", "banking77")
SPEED_SETS = ("sst2-full",)  # for the speed figure only: all of SST-2's 6,920 training sentences, no cache
IMAGE_BACKBONES = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2,smallcnn-simclr,random-lite0"
TEXT_BACKBONES = "minilm,mlm-minilm,random-minilm"
LOCK = Path("/tmp/headstart-cpu.lock")
SMOKE_TABLE: list[Path] = []  # --smoke's generated sentences (load_set's "smoke" set)


@contextmanager
def cpu_lock():
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- data: a training split and a disjoint test split per set, modest sizes -------------------------------------

def _stratified(data, n_train: int, n_test: int, seed: int = 0):
    """Disjoint, class-stratified train and test subsets of one Dataset."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    rest, test = train_test_split(idx, test_size=n_test, stratify=data.labels, random_state=seed)
    if n_train < len(rest):
        rest, _ = train_test_split(rest, train_size=n_train, stratify=data.labels[rest], random_state=seed)
    return data.subset(np.sort(rest), name=data.name), data.subset(np.sort(test), name=f"{data.name}-test")


def load_set(name: str):
    """Splits(train, None, test) of a benchmark data set (fit draws its validation split from train)."""
    from headstart.data import Splits, load_data

    if name == "cifar10":
        train, test = _stratified(load_data(SHARED / "images/cifar10/train").train, 1000, 500)
    elif name == "fashion-mnist":
        raw = load_data("fashion-mnist")
        train, _ = _stratified(raw.train, 1000, 10)
        _, test = _stratified(raw.test, 10, 500)
    elif name == "digits":
        train, test = _stratified(load_data("digits").train, 1000, 360)
    elif name == "hymenoptera":
        raw = load_data(SHARED / "images/hymenoptera")  # the official split: train 244, val 153 (used as test)
        train, test = raw.train, raw.val
    elif name in ("sst2", "sst2-full"):
        train = load_data(SHARED / "text/sst2/train.csv").train
        if name == "sst2":
            train, _ = _stratified(train, 1000, 10)
        test = load_data(SHARED / "text/sst2/dev.csv", classes=train.classes).train
    elif name == "smoke":  # 60 generated sentences: 40 to train on, 20 to test
        train, test = _stratified(load_data(SMOKE_TABLE[0]).train, 40, 20)
    elif name == "trec6":
        train, test = _stratified(load_data(SHARED / "text/trec6/train.csv").train, 1000, 500)
    elif name == "banking77":
        train, test = _stratified(load_data(SHARED / "text/banking77/train.csv").train, 1540, 770)
    else:
        raise SystemExit(f"unknown data set {name}")
    return Splits(train, None, test)


# --- candidates that this benchmark makes ---------------------------------------------------------------------

def make_smallcnn_simclr(folder: Path, minutes: float) -> None:
    from headstart import pretrain
    from headstart.data import UnlabeledData, load_data

    train, _ = _stratified(load_data(SHARED / "images/cifar10/train").train, 10_000, 10, seed=1)
    data = UnlabeledData("image", train.items, "cifar10-10k", "10,000 CIFAR-10 training images, labels unused")
    pretrain(data, "contrastive", "smallcnn", out=folder, image_size=32, max_minutes=minutes, seed=0)


def make_random_lite0(folder: Path) -> None:
    import torch

    from headstart.backbones import resolve_backbone
    from headstart.backbones.folder import save_backbone_dir

    torch.manual_seed(0)
    backbone = resolve_backbone("efficientnet_lite0", pretrained=False)
    save_backbone_dir(backbone, folder, {"objective": "none: random-init control", "steps": 0})


def make_random_minilm(folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from headstart.backbones.hf_text import minilm_location

    torch.manual_seed(0)
    location = minilm_location()
    AutoModel.from_config(AutoConfig.from_pretrained(location)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(location).save_pretrained(folder)


def make_random_minilm_like(folder: Path, out: Path) -> None:
    """The backbone folder `folder` (a Hugging Face model and tokenizer) with other random weights, in `out`."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(1)
    AutoModel.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)


def make_mlm_minilm(folder: Path, minutes: float) -> None:
    from headstart import pretrain
    from headstart.data import UnlabeledData

    texts = [t for name in TEXT_SETS for t in load_set(name).train.items]
    data = UnlabeledData("text", texts, "sst2+trec6+banking77", "training texts of the three text sets")
    pretrain(data, "mlm", "minilm", out=folder, max_minutes=minutes, seed=0)


def candidate_backbone(label: str, made: Path, args: argparse.Namespace) -> str:
    """The backbone string `select`/`fit` take for a candidate label, making the benchmark's own ones on demand."""
    makers = {"smallcnn-simclr": lambda f: make_smallcnn_simclr(f, args.pretrain_minutes),
              "random-lite0": make_random_lite0, "random-minilm": make_random_minilm,
              "mlm-minilm": lambda f: make_mlm_minilm(f, args.pretrain_minutes)}
    if label not in makers:
        return label  # a registered name (efficientnet_lite1, mpnet, ...) or a folder path
    folder = made / label
    if not folder.is_dir():
        print(f"--- making {label} in {folder}", flush=True)
        started = time.perf_counter()
        makers[label](folder)
        print(f"    {label}: {time.perf_counter() - started:.0f}s", flush=True)
    return str(folder)


# --- the measurements -----------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def append_row(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def run_set(name: str, labels: list[str], args: argparse.Namespace, rows_path: Path) -> None:
    import headstart

    done = read_rows(rows_path)
    have_select = {(r["dataset"], r["candidate"]) for r in done if r["kind"] == "select"}
    have_fit = {(r["dataset"], r["candidate"]) for r in done if r["kind"] == "fit"}
    if all((name, c) in have_select and (name, c) in have_fit for c in labels):
        print(f"=== {name}: done", flush=True)
        return
    backbones = {label: candidate_backbone(label, Path(args.out) / "backbones", args) for label in labels}
    splits = load_set(name)
    print(f"=== {name}: train {len(splits.train)}, test {len(splits.test)}, {len(splits.classes)} classes", flush=True)
    # Quality sets share the cache between select and fit (fit then embeds only what select did not); the speed
    # sets time both from scratch.
    cache = name not in SPEED_SETS
    with cpu_lock() if args.lock else nullcontext():
        if not all((name, c) in have_select for c in labels):
            result = headstart.select(splits, list(backbones.values()), per_class=args.per_class, cache=cache)
            by_backbone = {c.backbone: c for c in result.candidates}
            for label, backbone in backbones.items():
                c = by_backbone[backbone]
                append_row(rows_path, {"kind": "select", "dataset": name, "candidate": label, "logme": c.logme,
                                       "knn_accuracy": c.knn_accuracy, "items": c.items, "seconds": c.seconds,
                                       "select_total_seconds": result.seconds, "per_class": args.per_class,
                                       "cache": cache, "locked": args.lock})
                print(f"    select {label:>20}: LogME {c.logme:.4f}, kNN {100 * c.knn_accuracy:.1f}% ({c.seconds:.1f}s)",
                      flush=True)
        for label, backbone in backbones.items():
            if (name, label) in have_fit:
                continue
            started = time.perf_counter()
            model = headstart.fit(splits, backbone, seed=0, cache=cache)
            seconds = time.perf_counter() - started
            sizes = model.manifest.data.splits
            append_row(rows_path, {"kind": "fit", "dataset": name, "candidate": label, "strategy":
                                   model.manifest.strategy.name, "accuracy": model.metrics["accuracy"],
                                   "seconds": seconds, "items": sum(sizes.values()), "splits": sizes, "cache": cache,
                                   "locked": args.lock})
            print(f"    fit    {label:>20}: {100 * model.metrics['accuracy']:.2f}% ({seconds:.0f}s)", flush=True)
            del model


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from scipy.stats import weightedtau

    selects = {(r["dataset"], r["candidate"]): r for r in rows if r["kind"] == "select"}
    fits = {(r["dataset"], r["candidate"]): r for r in rows if r["kind"] == "fit"}
    per_set = []
    for dataset in dict.fromkeys(d for d, _ in fits):
        cands = [c for d, c in fits if d == dataset and (d, c) in selects]
        if len(cands) < 2:
            continue
        acc = [fits[dataset, c]["accuracy"] for c in cands]
        score = [selects[dataset, c]["logme"] for c in cands]
        knn = [selects[dataset, c]["knn_accuracy"] for c in cands]
        select_s = selects[dataset, cands[0]]["select_total_seconds"]
        fit_s = sum(fits[dataset, c]["seconds"] for c in cands)
        per_set.append({
            "dataset": dataset, "candidates": len(cands),
            "tau_logme": float(weightedtau(score, acc).statistic), "tau_knn": float(weightedtau(knn, acc).statistic),
            "best_by_fit": cands[int(np.argmax(acc))], "best_by_logme": cands[int(np.argmax(score))],
            "select_items": selects[dataset, cands[0]]["items"], "fit_items": fits[dataset, cands[0]]["items"],
            "select_s": select_s, "fits_s": fit_s, "speedup": fit_s / select_s,
            "detail": {c: {"logme": round(s, 4), "knn": round(k, 3), "accuracy": round(a, 4)}
                       for c, s, k, a in zip(cands, score, knn, acc)},
        })
    speed = [s for s in per_set if s["dataset"] in SPEED_SETS]
    per_set = [s for s in per_set if s["dataset"] not in SPEED_SETS]
    image = [s["tau_logme"] for s in per_set if s["dataset"] in IMAGE_SETS]
    text = [s["tau_logme"] for s in per_set if s["dataset"] in TEXT_SETS]
    return {
        "per_set": per_set, "speed": speed,
        "mean_tau_logme": statistics.mean(s["tau_logme"] for s in per_set) if per_set else None,
        "mean_tau_knn": statistics.mean(s["tau_knn"] for s in per_set) if per_set else None,
        "mean_tau_logme_images": statistics.mean(image) if image else None,
        "mean_tau_logme_text": statistics.mean(text) if text else None,
    }


def print_summary(summary: dict[str, Any]) -> None:
    rows = [{**s, "tau_logme": round(s["tau_logme"], 3), "tau_knn": round(s["tau_knn"], 3),
             "select_s": round(s["select_s"], 1), "fits_s": round(s["fits_s"], 1), "speedup": round(s["speedup"], 1)}
            for s in summary["per_set"]]
    # select_s / fits_s here are not the speed figure: these fits find select's embeddings in the cache.
    print(table(rows, ["dataset", "candidates", "tau_logme", "tau_knn", "best_by_fit", "best_by_logme",
                       "select_items", "fit_items"]))
    for s in summary["per_set"] + summary["speed"]:
        print(f"\n{s['dataset']}: " + "; ".join(f"{c} LogME {d['logme']}, kNN {100 * d['knn']:.1f}%, fit "
                                                f"{100 * d['accuracy']:.1f}%" for c, d in s["detail"].items()))
    print(f"\nmean weighted tau: LogME {summary['mean_tau_logme']}, kNN {summary['mean_tau_knn']} (images "
          f"{summary['mean_tau_logme_images']}, text {summary['mean_tau_logme_text']})")
    for s in summary["speed"]:
        print(f"speed, {s['dataset']}: select {s['select_s']:.0f}s on {s['select_items']} items per candidate against "
              f"{s['candidates']} fits {s['fits_s']:.0f}s on {s['fit_items']} items each: {s['speedup']:.1f}x "
              f"(weighted tau {s['tau_logme']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(TEXT_SETS + IMAGE_SETS))
    parser.add_argument("--image-backbones", default=IMAGE_BACKBONES)
    parser.add_argument("--text-backbones", default=TEXT_BACKBONES)
    parser.add_argument("--per-class", type=int, default=50, help="select's subsample (its default)")
    parser.add_argument("--pretrain-minutes", type=float, default=3.0)
    parser.add_argument("--summary", action="store_true", help="only print the tables of the rows already there")
    parser.add_argument("--lock", action="store_true", help=f"hold {LOCK} over each set's select and fits")
    parser.add_argument("--out", default=str(OUT / "selection"), help="rows.jsonl, summary.json, made backbones")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # select and fit two tiny BERTs (the same architecture, other random weights) on generated text
        folder = start_smoke()
        table_path, bert = smoke_text(folder / "text", per_class=30)
        other = folder / "tiny-bert-other"
        make_random_minilm_like(bert, other)
        SMOKE_TABLE.append(table_path)
        args.sets, args.per_class, args.out = "smoke", 10, str(_common.OUT / "selection")
        args.text_backbones = args.image_backbones = f"{bert},{other}"
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    os.environ.setdefault("HEADSTART_CACHE", str(Path(args.out) / "cache"))  # not the user's cache: starts empty
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    if not args.summary:
        for name in args.sets.split(","):
            labels = (args.text_backbones if name in TEXT_SETS + SPEED_SETS else args.image_backbones).split(",")
            run_set(name, labels, args, rows_path)
    summary = summarise(read_rows(rows_path))
    print_summary(summary)
    (out / "summary.json").write_text(json.dumps({"machine": machine(), **summary}, indent=2) + "\n")
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
