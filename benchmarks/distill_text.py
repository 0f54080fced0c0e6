"""Few-shot SST-2 through a teacher (issue 13): mpnet `contrastive` on N labels per class, distilled into minilm.

Per draw (seed): the teacher is `headstart.fit(SST-2, backbone="mpnet", strategy="contrastive",
labels_per_class=N, seed=S)`, exactly as benchmarks/few_shot_text.py fits it; `headstart.distill` then lets it
label SST-2's training sentences as unlabeled text (their labels are never read; the teacher's validation
sentences are left out) and fits minilm (strategy auto) on those labels plus the N real ones per class. Both are
tested on the 872 sentences of dev.csv. A table of mean ± std on stdout; rows are appended to
benchmarks/out/distill_text.json as they finish, and a rerun skips the draws already there.

  python benchmarks/distill_text.py                        # 8 labels per class, 5 draws
  python benchmarks/distill_text.py --labels 64 --seeds 3
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


def run_draw(splits, n: int, seed: int, teacher_backbone: str, student_backbone: str, run_root: Path
             ) -> dict[str, Any]:
    import headstart
    from headstart.data import UnlabeledData

    started = time.perf_counter()
    teacher = headstart.fit(splits, backbone=teacher_backbone, strategy="contrastive", labels_per_class=n, seed=seed)
    teacher_s = time.perf_counter() - started
    unlabeled = UnlabeledData("text", list(splits.train.items), "sst2-train", "SST-2 train.csv, labels unread")
    started = time.perf_counter()
    student = headstart.distill(teacher, unlabeled, student_backbone, "auto", data=splits,
                                out=run_root / f"{student_backbone}-from-{teacher_backbone}-{n}-s{seed}",
                                overwrite=True)
    record = student.manifest.data.distillation
    return {"labels_per_class": n, "seed": seed, "teacher": teacher_backbone, "student": student_backbone,
            "teacher_accuracy": teacher.metrics["accuracy"], "student_accuracy": student.metrics["accuracy"],
            "student_strategy": student.manifest.training.get("auto", {}).get("chosen"),
            "pseudo_labeled": record["pseudo_labeled"], "dropped_in_val_or_test": record["dropped_in_val_or_test"],
            "teacher_s": round(teacher_s, 1), "distill_s": round(time.perf_counter() - started, 1),
            "student_timings": student.manifest.timings}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summary_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| labels/class | draws | teacher (mpnet contrastive) | student (minilm, distilled) | student min-max |",
             "|---|---|---|---|---|"]
    for n in sorted({r["labels_per_class"] for r in rows}):
        group = [r for r in rows if r["labels_per_class"] == n]
        t = [100 * r["teacher_accuracy"] for r in group]
        s = [100 * r["student_accuracy"] for r in group]
        lines.append(f"| {n} | {len(group)} | {statistics.mean(t):.1f} ± {_std(t):.1f} | {statistics.mean(s):.1f} ± "
                     f"{_std(s):.1f} | {min(s):.1f}-{max(s):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", default="8", help="labels per class, comma list")
    parser.add_argument("--seeds", type=int, default=5, help="draws (seeds 0..N-1)")
    parser.add_argument("--teacher", default="mpnet")
    parser.add_argument("--student", default="minilm")
    parser.add_argument("--out", default=str(OUT / "distill_text.json"))
    add_smoke_option(parser)
    args = parser.parse_args()
    source = None
    if args.smoke:  # one draw, 4 labels per class, a tiny BERT as teacher and as student, on generated sentences
        source, bert = smoke_text_folder(start_smoke() / "text")
        args.labels, args.seeds, args.teacher, args.student = "4", 1, str(bert), str(bert)
        args.out = str(_common.OUT / "distill_text.json")
    quiet_fits(OUT / "cache")

    from headstart.data import Splits, load_data

    raw = load_data(source or shared("text/sst2"))
    splits = Splits(raw.train, None, raw.val)
    path = Path(args.out)
    result = load_runs(path)
    done = {(r["labels_per_class"], r["seed"], r["teacher"], r["student"]) for r in result["runs"]}
    for n in (int(v) for v in args.labels.split(",")):
        for seed in range(args.seeds):
            if (n, seed, args.teacher, args.student) in done:
                continue
            row = run_draw(splits, n, seed, args.teacher, args.student, path.parent / "distill_runs")
            print(f"  {n}/class seed {seed}: teacher {100 * row['teacher_accuracy']:.2f}%, student "
                  f"{100 * row['student_accuracy']:.2f}% ({row['teacher_s']:.0f}s + {row['distill_s']:.0f}s)", flush=True)
            append_run(path, result, row, summary_table)
    print("\nSST-2 dev accuracy (%), mean ± std over draws\n" + summary_table(result["runs"]))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
