"""Few-shot text classification on SST-2 (issue 13): SetFit-style `contrastive` against `probe` and `finetune`.

For each backbone, labels per class and draw (seed), `headstart.fit` on SST-2's train.csv with
`labels_per_class=N` (N training and at most N validation sentences per class, drawn as
`benchmarks/label_efficiency.py` draws them: `make_splits` with the seed), then accuracy on the 872 sentences of
dev.csv (the test split here). A table of mean ± std over draws on stdout; every run is appended to
benchmarks/out/few_shot_text.json as it finishes, and a second invocation skips the runs already there
(resumable; delete the file to start afresh).

  python benchmarks/few_shot_text.py                                   # minilm contrastive, 8 and 64/class, 5 draws
  python benchmarks/few_shot_text.py --backbones mpnet --labels 8      # the SetFit paper's encoder
  python benchmarks/few_shot_text.py --strategies contrastive,probe,finetune --labels 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402
from _common import OUT, add_smoke_option, append_run, load_runs, quiet_fits, shared, smoke_text_folder, start_smoke  # noqa: E402
from label_efficiency import finetune_epochs  # noqa: E402  (the same step budget as issue 4's SST-2 runs)


def run_one(splits, backbone: str, strategy: str, n: int, seed: int, run_root: Path) -> dict[str, Any]:
    import headstart

    options: dict[str, Any] = {}
    if strategy == "finetune":
        options = {"epochs": finetune_epochs(2 * n), "out": run_root / f"{backbone}-{strategy}-{n}-s{seed}"}
    started = time.perf_counter()
    model = headstart.fit(splits, backbone=backbone, strategy=strategy, labels_per_class=n, seed=seed, **options)
    wall = time.perf_counter() - started
    training = model.manifest.training
    return {"backbone": backbone, "strategy": strategy, "labels_per_class": n, "seed": seed,
            "accuracy": model.metrics["accuracy"], "macro_f1": model.metrics.get("macro_f1"),
            "train_size": model.manifest.data.splits["train"], "val_size": model.manifest.data.splits["val"],
            "wall_s": round(wall, 1), "timings": model.manifest.timings,
            "pair_stage": {k: v for k, v in training.get("pair_stage", {}).items() if k != "losses"}}


def summary_table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple, list[float]] = {}
    walls: dict[tuple, list[float]] = {}
    for r in rows:
        key = (r["backbone"], r["strategy"], r["labels_per_class"])
        groups.setdefault(key, []).append(r["accuracy"])
        walls.setdefault(key, []).append(r["wall_s"])
    lines = ["| backbone | strategy | labels/class | draws | dev accuracy (%) | min-max | s per fit |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(groups):
        accs = groups[key]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(accs)} | {100 * statistics.mean(accs):.1f} ± "
                     f"{100 * std:.1f} | {100 * min(accs):.1f}-{100 * max(accs):.1f} | "
                     f"{statistics.mean(walls[key]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="minilm")
    parser.add_argument("--strategies", default="contrastive")
    parser.add_argument("--labels", default="8,64", help="labels per class, comma list")
    parser.add_argument("--seeds", type=int, default=5, help="draws of the labeled subset (seeds 0..N-1)")
    parser.add_argument("--out", default=str(OUT / "few_shot_text.json"))
    add_smoke_option(parser)
    args = parser.parse_args()
    source = None
    if args.smoke:  # one draw of 4 labels per class on generated sentences, a tiny BERT
        source, bert = smoke_text_folder(start_smoke() / "text")
        args.backbones, args.labels, args.seeds = str(bert), "4", 1
        args.out = str(_common.OUT / "few_shot_text.json")
    quiet_fits(OUT / "cache")

    from headstart.data import Splits, load_data

    raw = load_data(source or shared("text/sst2"))  # train.csv and dev.csv
    splits = Splits(raw.train, None, raw.val)
    path = Path(args.out)
    result = load_runs(path)
    done = {(r["backbone"], r["strategy"], r["labels_per_class"], r["seed"]) for r in result["runs"]}
    print(f"SST-2: {len(raw.train)} train, {len(raw.val)} dev; {len(done)} runs already in {path}", flush=True)
    for backbone in args.backbones.split(","):
        for strategy in args.strategies.split(","):
            for n in (int(v) for v in args.labels.split(",")):
                for seed in range(args.seeds):
                    if (backbone, strategy, n, seed) in done:
                        continue
                    row = run_one(splits, backbone, strategy, n, seed, path.parent / "few_shot_runs")
                    print(f"  {backbone:>7} {strategy:>11} {n:>3}/class seed {seed}: {100 * row['accuracy']:.2f}% "
                          f"({row['wall_s']:.0f}s)", flush=True)
                    append_run(path, result, row, summary_table)
    print("\nSST-2 dev accuracy, mean ± std over draws\n" + summary_table(result["runs"]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
