"""Audio label efficiency on FSDD (issue 10). Not a test: the lead engineer runs it.

Free Spoken Digit Dataset, the shared copy (2,700 clips, 6 speakers, 8 kHz): each draw (seed) holds out 20% as
the test split and 10% for validation, then keeps 1, 5, 10, 50 labels per class or all of the rest.

  1. `speech_embedding` probe (3 draws) and finetune;
  2. `smallcnn` on log-mel from scratch (finetune);
  3. `smallcnn` pretrained by `headstart pretrain` on all 2,700 clips without labels (--objective, a time
     budget), then probe and finetune;
  4. leave-one-speaker-out: `speech_embedding` probe trained on five speakers (all labels), tested on the sixth.

  python benchmarks/audio_label_efficiency.py                       # about 40 minutes on 2 cores
  python benchmarks/audio_label_efficiency.py --quick               # every stage, a few minutes
  python benchmarks/audio_label_efficiency.py --stages probe,loso   # a subset

Prints a table, writes benchmarks/out/audio_label_efficiency.json and a plot in benchmarks/figures/. Each
finished fit is appended to benchmarks/out/audio_label_efficiency_rows.jsonl, and a rerun skips the fits found
there (and reuses the pretrained backbone in benchmarks/out/), so an interrupted run continues; --fresh starts
over.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import ROOT, add_smoke_option, shared, start_smoke, write_results
from label_efficiency import Clock, finetune_epochs, label_counts, label_name, plot, print_table, summarise

STAGES = ("probe", "finetune", "scratch", "pretrain", "loso")


SOURCE: list[Path] = []  # --smoke's generated clips instead of FSDD


def fsdd():
    from headstart.data import load_data

    return load_data(SOURCE[0] if SOURCE else shared("audio/fsdd/train")).train


def smoke_clips(root: Path, per_class: int = 4, rate: int = 8000) -> Path:
    """Tones named as FSDD names its clips (class_speaker_index.wav, two speakers): --smoke's data."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    t = np.arange(rate // 2) / rate
    for digit, freq in enumerate((300.0, 900.0, 2400.0)):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
            soundfile.write(root / str(digit) / f"{digit}_s{i % 2}_{i}.wav", wave.astype(np.float32), rate)
    return root


def speaker_of(path: Path) -> str:
    return path.stem.split("_")[1]  # digit_speaker_index.wav


def run_fit(data, backbone: str, strategy, n: int | None, seed: int, work: Path) -> dict[str, Any]:
    import headstart

    started = time.perf_counter()
    model = headstart.fit(data, backbone, strategy, labels_per_class=n, seed=seed, out=work / f"run{seed}",
                          overwrite=True)
    return {"accuracy": model.metrics["accuracy"], "wall_s": time.perf_counter() - started,
            "n_train": model.manifest.data.splits["train"]}


ROWS = Path("audio_label_efficiency_rows.jsonl")  # in _common.OUT


def done_rows(rows_file: Path, fresh: bool) -> list[dict[str, Any]]:
    if fresh or not rows_file.is_file():
        rows_file.parent.mkdir(parents=True, exist_ok=True)
        rows_file.write_text("")
        return []
    return [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]


def label_efficiency(args, clock: Clock, work: Path) -> list[dict[str, Any]]:
    from headstart import pretrain
    from headstart.strategies import FineTune, Probe

    data = fsdd()
    rows_file = _common.OUT / ("audio_label_efficiency_quick_rows.jsonl" if args.quick else ROWS.name)
    rows = done_rows(rows_file, args.fresh)
    done = {(r["model"], r["strategy"], r["labels_per_class"], r["seed"]) for r in rows}
    counts = label_counts(args.labels)
    backbones: list[tuple[str, str, int]] = []  # (display name, backbone, draws)
    if "probe" in args.stages or "finetune" in args.stages:
        backbones.append(("speech_embedding", "speech_embedding", args.finetune_seeds))
    if "scratch" in args.stages:
        backbones.append(("smallcnn scratch", "smallcnn", args.finetune_seeds))
    if "pretrain" in args.stages:
        folder = _common.OUT / f"fsdd_smallcnn_{args.objective}{'_quick' if args.quick else ''}"
        if args.fresh or not folder.is_dir():
            with clock.stage(f"pretrain smallcnn ({args.objective}, {args.pretrain_minutes} min)"):
                pretrain(SOURCE[0] if SOURCE else shared("audio/fsdd/train"), objective=args.objective,
                         backbone="smallcnn", out=folder, max_minutes=args.pretrain_minutes)
        backbones.append((f"smallcnn + {args.objective}", str(folder), args.finetune_seeds))
    for name, backbone, draws in backbones:
        strategies = []
        if name != "smallcnn scratch" and ("probe" in args.stages or name.startswith("smallcnn +")):
            strategies.append("probe")
        if name != "speech_embedding" or "finetune" in args.stages:
            strategies.append("finetune")
        for strategy in strategies:
            for n in counts:
                for seed in range(draws if strategy == "finetune" else args.seeds):
                    if (name, strategy, label_name(n), seed) in done:
                        continue
                    if strategy == "probe":
                        plan = Probe()
                    else:
                        n_train = 10 * n if n is not None else int(0.7 * len(data))
                        plan = FineTune(epochs=finetune_epochs(n_train, is_all=n is None,
                                                               all_epochs=args.all_epochs))
                    with clock.stage(f"{name} {strategy} {label_name(n)}/class seed {seed}"):
                        row = run_fit(data, backbone, plan, n, seed, work / "fits")
                    rows.append({"model": name, "strategy": strategy, "labels_per_class": label_name(n),
                                 "seed": seed, **row})
                    with rows_file.open("a") as f:
                        f.write(json.dumps(rows[-1]) + "\n")
                    print(f"    accuracy {row['accuracy']:.4f}", flush=True)
    return rows


def leave_one_speaker_out(clock: Clock, work: Path) -> list[dict[str, Any]]:
    import numpy as np

    import headstart
    from headstart.data.dataset import Splits

    data = fsdd()
    speakers = np.array([speaker_of(Path(p)) for p in data.items])
    rows = []
    for speaker in sorted(set(speakers)):
        test = np.flatnonzero(speakers == speaker)
        train = np.flatnonzero(speakers != speaker)
        with clock.stage(f"leave out {speaker}"):
            model = headstart.fit(Splits(data.subset(train), None, data.subset(test)), "speech_embedding", "probe",
                                  out=work / "loso" / speaker, overwrite=True)
        rows.append({"speaker": speaker, "test_clips": len(test), "accuracy": model.metrics["accuracy"]})
        print(f"    {speaker}: {model.metrics['accuracy']:.4f}", flush=True)
    mean = float(np.mean([r["accuracy"] for r in rows]))
    print("\nleave-one-speaker-out, speech_embedding probe, all labels\n| speaker | clips | accuracy |\n|---|---|---|")
    for r in rows:
        print(f"| {r['speaker']} | {r['test_clips']} | {100 * r['accuracy']:.1f} |")
    print(f"| mean | | {100 * mean:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--labels", default="1,5,10,50,all")
    parser.add_argument("--seeds", type=int, default=3, help="draws for probes")
    parser.add_argument("--finetune-seeds", type=int, default=1, help="draws for finetunes")
    parser.add_argument("--all-epochs", type=int, default=8, help="finetune epochs with all labels")
    parser.add_argument("--objective", default="contrastive")
    parser.add_argument("--pretrain-minutes", type=float, default=6.0)
    parser.add_argument("--quick", action="store_true", help="a smoke test of every stage")
    parser.add_argument("--fresh", action="store_true", help="ignore the rows and backbone of an earlier run")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # the probe on 18 generated clips (leave-one-speaker-out, two more fits, left to the full run)
        SOURCE.append(smoke_clips(start_smoke() / "clips", per_class=6))
        args.stages, args.labels, args.seeds, args.finetune_seeds, args.all_epochs = "probe", "all", 1, 1, 1
    args.stages = set(args.stages.split(","))
    if args.quick:
        args.labels, args.seeds, args.finetune_seeds, args.all_epochs, args.pretrain_minutes = "1,10", 1, 1, 1, 0.3
        args.fresh = True
    logging.getLogger("headstart").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    clock = Clock()
    work = Path(tempfile.mkdtemp(prefix="headstart-audio-bench-"))
    results: dict[str, Any] = {"args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}}
    if args.stages - {"loso"}:
        rows = label_efficiency(args, clock, work)
        summary = summarise(rows)
        order = [label_name(n) for n in label_counts(args.labels)]
        results.update(rows=rows, summary=summary, table=print_table(summary, order))
        figure = (_common.OUT if args.smoke else ROOT / "figures") / "label_efficiency_fsdd.png"
        plot(summary, order, int(0.7 * 2700 / 10), figure,
             "FSDD spoken digits: test accuracy vs labels per class (2 cores, CPU)")
        print(f"plot: {figure}")
    if "loso" in args.stages:
        results["leave_one_speaker_out"] = leave_one_speaker_out(clock, work)
    results["stages"] = clock.stages
    write_results("audio_label_efficiency" + ("_quick" if args.quick else ""), results)


if __name__ == "__main__":
    main()
