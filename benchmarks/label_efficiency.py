"""Label efficiency of self-supervised pretraining (issue 4). Not a test: the lead engineer runs it.

Images (default mode), Fashion-MNIST, official 60,000 train / 10,000 test:
  1. pretrain `smallcnn` (28x28) on the 60,000 training images without labels, once per objective
     (autoencoder, masked, contrastive), each with a time budget (--pretrain-minutes);
  2. probe and finetune each pretrained encoder with 1, 10, 100 labels per class and all labels, 3 draws (seeds)
     of the labeled subset; the same architecture from scratch (finetune only: a probe on random features is
     refused by `fit`) and the ImageNet `efficientnet_lite0` probe as references;
  3. test accuracy on the 10,000 official test images: mean and std over the draws, wall and CPU minutes per
     stage; a table on stdout, JSON and a PNG plot (accuracy vs labels per class) in benchmarks/out/.

SST-2 (--sst2): continued MLM pretraining of `minilm` on the training sentences (labels ignored), then finetune
with 8 and 64 labels per class and all labels, against `minilm` without MLM; accuracy on dev.csv, 3 draws.

  python benchmarks/label_efficiency.py                 # images, about 90 minutes on 2 cores
  python benchmarks/label_efficiency.py --quick         # a smoke test of every stage, a few minutes
  python benchmarks/label_efficiency.py --sst2          # text, about 40 minutes on 2 cores
  python benchmarks/label_efficiency.py --stages pretrain,probe --objectives contrastive

"all" labels means the whole training split less the 10% `fit` holds out for validation; its draws differ only
in the validation split, initialisation and order, so it runs with --all-seeds (default 1) draws.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import add_smoke_option, quiet_fits, smoke_images, start_smoke

ROOT = Path(__file__).resolve().parent
SST2 = ROOT.parent.parent / "shared" / "datasets" / "text" / "sst2"
IMAGE_STAGES = ("pretrain", "probe", "finetune", "scratch", "lite0")
OBJECTIVES = ("autoencoder", "masked", "contrastive")


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Wall and CPU minutes per stage."""

    def __init__(self):
        self.stages: dict[str, dict[str, float]] = {}

    @contextmanager
    def stage(self, name: str):
        wall, cpu = time.perf_counter(), cpu_seconds()
        print(f"--- {name}", flush=True)
        try:
            yield
        finally:
            entry = self.stages.setdefault(name, {"wall_min": 0.0, "cpu_min": 0.0})
            entry["wall_min"] += (time.perf_counter() - wall) / 60
            entry["cpu_min"] += (cpu_seconds() - cpu) / 60
            print(f"    {name}: {entry['wall_min']:.2f} wall min, {entry['cpu_min']:.2f} CPU min (so far)", flush=True)


def label_counts(values: str) -> list[int | None]:
    return [None if v.strip() == "all" else int(v) for v in values.split(",")]


def label_name(n: int | None) -> str:
    return "all" if n is None else str(n)


def finetune_epochs(n_train: int, batch: int = 32, target_steps: int = 300, low: int = 2, high: int = 40,
                    all_epochs: int = 2, is_all: bool = False) -> int:
    """Enough epochs for ~target_steps updates on small subsets; a fixed small number on all labels."""
    if is_all:
        return all_epochs
    return max(low, min(high, math.ceil(target_steps / max(1, math.ceil(n_train / batch)))))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std of accuracy over draws, per (model, strategy, labels)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["strategy"], r["labels_per_class"]), []).append(r)
    out = []
    for (model, strategy, labels), rs in groups.items():
        accs = [r["accuracy"] for r in rs]
        out.append({"model": model, "strategy": strategy, "labels_per_class": labels, "draws": len(accs),
                    "accuracy_mean": statistics.mean(accs),
                    "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "wall_min": sum(r["wall_s"] for r in rs) / 60})
    return out


def print_table(summary: list[dict[str, Any]], label_order: list[str]) -> str:
    keys = sorted({(s["model"], s["strategy"]) for s in summary})
    cell = {(s["model"], s["strategy"], s["labels_per_class"]): s for s in summary}
    lines = ["| model | strategy | " + " | ".join(f"{n}/class" for n in label_order) + " |",
             "|---|---|" + "---|" * len(label_order)]
    for model, strategy in keys:
        cells = []
        for n in label_order:
            s = cell.get((model, strategy, n))
            cells.append(f"{100 * s['accuracy_mean']:.1f} ± {100 * s['accuracy_std']:.1f}" if s else "")
        lines.append(f"| {model} | {strategy} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print("\ntest accuracy (%), mean ± std over draws\n" + text, flush=True)
    return text


def plot(summary: list[dict[str, Any]], label_order: list[str], train_size: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    x_of = {n: (int(n) if n != "all" else train_size) for n in label_order}
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for model, strategy in sorted({(s["model"], s["strategy"]) for s in summary}):
        pts = sorted((x_of[s["labels_per_class"]], s["accuracy_mean"], s["accuracy_std"]) for s in summary
                     if s["model"] == model and s["strategy"] == strategy and s["labels_per_class"] in x_of)
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, [100 * y for y in ys], yerr=[100 * e for e in es], marker="o", capsize=3,
                    ls="--" if strategy == "probe" else "-", label=f"{model} {strategy}")
    ax.set_xscale("log")
    ax.set_xticks(list(x_of.values()), [f"{n}" for n in label_order])
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


def run_fit(rows: list, model_name: str, backbone: str, strategy: str, splits, n: int | None, seed: int,
            run_root: Path, **options: Any) -> None:
    import headstart

    start = time.perf_counter()
    run_dir = run_root / f"{model_name}-{strategy}-{label_name(n)}-s{seed}"
    model = headstart.fit(splits, backbone=backbone, strategy=strategy, labels_per_class=n, seed=seed,
                          out=run_dir if strategy == "finetune" else None, **options)
    wall = time.perf_counter() - start
    rows.append({"model": model_name, "strategy": strategy, "labels_per_class": label_name(n), "seed": seed,
                 "accuracy": model.metrics["accuracy"], "macro_f1": model.metrics.get("macro_f1"),
                 "train_size": model.manifest.data.splits["train"], "wall_s": round(wall, 1)})
    print(f"    {model_name:>20} {strategy:>8} {label_name(n):>4}/class seed {seed}: "
          f"acc {100 * model.metrics['accuracy']:.2f}% ({wall:.0f}s)", flush=True)


def images(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from headstart import pretrain
    from headstart.data import Splits, load_data

    clock = Clock()
    raw = load_data(args.data)
    train, test = raw.train, raw.test
    if args.quick:
        rng = np.random.default_rng(0)
        train = train.subset(np.sort(rng.permutation(len(train))[: args.quick_train]))
        test = test.subset(np.sort(rng.permutation(len(test))[: args.quick_test]), name="fashion-mnist-test")
    splits = Splits(train, None, test)
    stages = set(args.stages.split(","))
    counts = label_counts(args.labels)
    out = Path(args.out)
    run_root = out / "runs"
    rows: list[dict[str, Any]] = []
    pretrained: dict[str, dict[str, Any]] = {}
    print(f"Fashion-MNIST: {len(train)} train (unlabeled for pretraining), {len(test)} test; stages {sorted(stages)}")

    for objective in args.objectives.split(","):
        ckpt = out / "backbones" / f"smallcnn-{objective}"
        if "pretrain" in stages:
            with clock.stage(f"pretrain {objective}"):
                from headstart.data import UnlabeledData

                data = UnlabeledData("image", train.items, "fashion-mnist", "fashion-mnist (train images)")
                result = pretrain(data, objective, "smallcnn", out=ckpt, image_size=28, max_minutes=args.pretrain_minutes,
                                  seed=0)
                p = result.pretraining
                pretrained[objective] = {k: p[k] for k in ("steps", "samples_seen", "first_loss", "final_loss",
                                                           "train_seconds", "stopped_by", "options")}
                print(f"    {objective}: {p['steps']} steps, {p['samples_seen']:,} samples, loss "
                      f"{p['first_loss']:.4g} -> {p['final_loss']:.4g}", flush=True)
        if not (ckpt / "headstart-backbone.json").is_file():
            if stages & {"probe", "finetune"}:
                print(f"    (no pretrained {objective} backbone in {ckpt}: run the pretrain stage first)")
            continue
        for strategy in ("probe", "finetune"):
            if strategy not in stages:
                continue
            with clock.stage(f"{strategy} {objective}"):
                for n in counts:
                    for seed in range(args.all_seeds if n is None else args.seeds):
                        opts = {} if strategy == "probe" else {"epochs": epochs_for(n, len(train), args)}
                        run_fit(rows, f"smallcnn+{objective}", str(ckpt), strategy, splits, n, seed, run_root, **opts)

    if "scratch" in stages:
        with clock.stage("finetune scratch"):
            for n in counts:
                for seed in range(args.all_seeds if n is None else args.seeds):
                    run_fit(rows, "smallcnn scratch", "smallcnn", "finetune", splits, n, seed, run_root,
                            image_size=28, epochs=epochs_for(n, len(train), args))
    if "lite0" in stages:
        with clock.stage("probe efficientnet_lite0"):
            for n in counts:
                for seed in range(args.all_seeds if n is None else args.seeds):
                    run_fit(rows, f"efficientnet_lite0 {args.lite0_size}px", "efficientnet_lite0", "probe", splits,
                            n, seed, run_root, image_size=args.lite0_size)

    summary = summarise(rows)
    order = [label_name(n) for n in counts]
    text = print_table(summary, order) if summary else ""
    result = {"mode": "images", "quick": args.quick, "args": vars(args), "train_size": len(train),
              "test_size": len(test), "pretraining": pretrained, "runs": rows, "summary": summary,
              "stages": clock.stages, "table": text}
    if summary:
        plot(summary, order, len(train) // 10, out / "label_efficiency.png",
             f"Fashion-MNIST: {len(test)} test images; pretraining on {len(train)} unlabeled")
    return result


def epochs_for(n: int | None, train_size: int, args: argparse.Namespace) -> int:
    if n is None:
        return args.all_epochs
    n_train = n * 10  # ten classes
    return finetune_epochs(n_train, low=2, high=args.max_finetune_epochs)


def sst2(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from headstart import pretrain
    from headstart.data import Splits, load_data

    if not SST2.is_dir():
        raise SystemExit(f"SST-2 not found at {SST2}")
    clock = Clock()
    raw = load_data(SST2)  # train.csv and dev.csv
    train, dev = raw.train, raw.val
    if args.quick:
        rng = np.random.default_rng(0)
        train = train.subset(np.sort(rng.permutation(len(train))[: args.quick_train]))
        dev = dev.subset(np.sort(rng.permutation(len(dev))[: args.quick_test]))
    splits = Splits(train, None, dev)
    counts = label_counts(args.sst2_labels)
    out = Path(args.out)
    ckpt = out / "backbones" / "minilm-mlm-sst2"
    rows: list[dict[str, Any]] = []
    pretrained = {}
    if "pretrain" in args.stages.split(","):
        with clock.stage("mlm pretrain"):
            from headstart.data import UnlabeledData

            data = UnlabeledData("text", list(train.items), "sst2-train", str(SST2 / "train.csv"))
            result = pretrain(data, "mlm", "minilm", out=ckpt, max_minutes=args.mlm_minutes, seed=0)
            p = result.pretraining
            pretrained = {k: p[k] for k in ("steps", "samples_seen", "first_loss", "final_loss", "train_seconds",
                                            "stopped_by", "options")}
            print(f"    mlm: {p['steps']} steps, loss {p['first_loss']:.4g} -> {p['final_loss']:.4g}", flush=True)
    models = [("minilm", "minilm")] + ([("minilm+mlm", str(ckpt))] if (ckpt / "headstart-backbone.json").is_file()
                                       else [])
    for name, backbone in models:
        with clock.stage(f"finetune {name}"):
            for n in counts:
                for seed in range(args.all_seeds if n is None else args.seeds):
                    epochs = args.all_epochs if n is None else finetune_epochs(2 * n, high=args.max_finetune_epochs)
                    run_fit(rows, name, backbone, "finetune", splits, n, seed, out / "runs", epochs=epochs)
    summary = summarise(rows)
    order = [label_name(n) for n in counts]
    text = print_table(summary, order) if summary else ""
    if summary:
        plot(summary, order, len(train) // 2, out / "label_efficiency_sst2.png",
             f"SST-2 dev ({len(dev)} sentences); MLM on {len(train)} unlabeled training sentences")
    return {"mode": "sst2", "quick": args.quick, "args": vars(args), "train_size": len(train), "dev_size": len(dev),
            "pretraining": pretrained, "runs": rows, "summary": summary, "stages": clock.stages, "table": text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny everything: a smoke test of each stage")
    parser.add_argument("--sst2", action="store_true", help="the text part: MLM on SST-2, minilm finetune")
    parser.add_argument("--stages", default=None,
                        help=f"comma list of {','.join(IMAGE_STAGES)} (images) or pretrain,finetune (--sst2)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--labels", default="1,10,100,all", help="labels per class, images")
    parser.add_argument("--sst2-labels", default="8,64,all")
    parser.add_argument("--seeds", type=int, default=3, help="draws of the labeled subset")
    parser.add_argument("--all-seeds", type=int, default=1, help="draws for 'all' labels")
    parser.add_argument("--all-epochs", type=int, default=2, help="finetune epochs with all labels")
    parser.add_argument("--max-finetune-epochs", type=int, default=40)
    parser.add_argument("--pretrain-minutes", type=float, default=10.0, help="time budget per image objective")
    parser.add_argument("--mlm-minutes", type=float, default=12.0)
    parser.add_argument("--lite0-size", type=int, default=224, help="input size of the efficientnet_lite0 probe")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "out"))
    parser.add_argument("--data", default="fashion-mnist", help=argparse.SUPPRESS)  # --smoke's generated images
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # the images mode on 24 generated images: one objective pretrained for a second, then probed
        folder = start_smoke()
        smoke_images(folder / "images" / "train", per_class=6)
        smoke_images(folder / "images" / "test", per_class=2)
        args.data, args.out, args.objectives, args.labels, args.seeds = folder / "images", folder / "out", "autoencoder", "2", 1
        args.stages, args.pretrain_minutes = "pretrain,probe", 0.01
    if args.quick:
        args.quick_train, args.quick_test = (600, 300) if args.sst2 else (3000, 1000)
        args.seeds = min(args.seeds, 2)
        args.pretrain_minutes = min(args.pretrain_minutes, 0.25)
        args.mlm_minutes = min(args.mlm_minutes, 0.5)
        args.max_finetune_epochs = min(args.max_finetune_epochs, 4)
        args.all_epochs = 1
        args.lite0_size = min(args.lite0_size, 64)
        args.labels = "1,10,all" if args.labels == "1,10,100,all" else args.labels
        args.sst2_labels = "8,all" if args.sst2_labels == "8,64,all" else args.sst2_labels
        args.out = str(Path(args.out) / "quick")
    if args.stages is None:
        args.stages = "pretrain,finetune" if args.sst2 else ",".join(IMAGE_STAGES)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    quiet_fits(Path(args.out) / "cache")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = sst2(args) if args.sst2 else images(args)
    result["total_wall_min"] = (time.perf_counter() - started) / 60
    result["stage_table"] = {k: {m: round(v, 2) for m, v in s.items()} for k, s in result["stages"].items()}
    print("\nminutes per stage (wall, CPU):")
    for name, s in result["stages"].items():
        print(f"  {name:<28} {s['wall_min']:7.2f} {s['cpu_min']:7.2f}")
    print(f"  {'total':<28} {result['total_wall_min']:7.2f}")
    path = Path(args.out) / ("label_efficiency_sst2.json" if args.sst2 else "label_efficiency.json")
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
