"""LoRA against full fine-tuning on SST-2 (issue 13): accuracy, trainable parameters, time and peak memory.

Each strategy runs `headstart.fit` with its defaults on SST-2's train.csv (10% held out for validation) and is
tested on the 872 sentences of dev.csv, in its own child process, one after the other, so that each one's peak
resident memory (the child's ru_maxrss) and wall time are its own and both are measured in the same run. A table
on stdout; JSON in benchmarks/out/lora_vs_finetune.json. A strategy already in that file is not run again
(resumable; --fresh runs all).

  flock /tmp/headstart-cpu.lock python benchmarks/lora_vs_finetune.py                # minilm: finetune, lora
  python benchmarks/lora_vs_finetune.py --strategies lora --settings '{"merge": true}'
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402
from _common import OUT, add_smoke_option, machine, shared, smoke_text_folder, start_smoke  # noqa: E402


def child(strategy: str, backbone: str, run_dir: Path, settings: dict[str, Any], data: str | None = None) -> None:
    """Run one fit in this (child) process; print its result as the last line of JSON."""
    import logging
    import warnings

    import headstart
    from headstart.data import Splits, load_data

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    raw = load_data(data or shared("text/sst2"))
    started = time.perf_counter()
    model = headstart.fit(Splits(raw.train, None, raw.val), backbone, strategy, out=run_dir, overwrite=True,
                          **settings)
    wall = time.perf_counter() - started
    training = model.manifest.training
    classifier = model.classifier
    total = sum(p.numel() for p in classifier.parameters())
    lora = training.get("lora")
    trainable = lora["trainable_parameters"] if lora else total
    print(json.dumps({"strategy": strategy, "backbone": backbone, "settings": settings,
                      "accuracy": model.metrics["accuracy"], "wall_s": round(wall, 1),
                      "timings": model.manifest.timings, "trainable_parameters": trainable,
                      "total_parameters": lora["total_parameters"] if lora else total,
                      "trainable_percent": 100 * trainable / (lora["total_parameters"] if lora else total),
                      "finetune": {k: v for k, v in training["finetune"].items() if k != "best_checkpoint"}}))


def run_child(strategy: str, backbone: str, run_dir: Path, settings: dict[str, Any], data: str | None = None
              ) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", strategy, "--backbones", backbone, "--run-dir", str(run_dir),
               "--settings", json.dumps(settings), *(["--data", data] if data else [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{strategy} failed (status {status}):\n{output[-2000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024)
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="finetune,lora")
    parser.add_argument("--backbones", default="minilm")
    parser.add_argument("--settings", default="{}", help="JSON settings for every strategy (e.g. epochs)")
    parser.add_argument("--out", default=str(OUT / "lora_vs_finetune.json"))
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)  # --smoke's generated sentences
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # one LoRA child for an epoch on generated sentences with a tiny BERT (each child costs a start-up)
        data, bert = smoke_text_folder(start_smoke() / "text")
        args.data, args.backbones, args.strategies, args.settings = str(data), str(bert), "lora", '{"epochs": 1}'
        args.out, args.fresh = str(_common.OUT / "lora_vs_finetune.json"), True
    os.environ.setdefault("HEADSTART_CACHE", str(OUT / "cache"))
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = json.loads(args.settings)
    if args.child:
        return child(args.child, args.backbones, Path(args.run_dir), settings, args.data)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(path.read_text()) if path.is_file() and not args.fresh else {"runs": []}
    for backbone in args.backbones.split(","):
        for strategy in args.strategies.split(","):
            if any(r["strategy"] == strategy and r["backbone"] == backbone and r["settings"] == settings
                   for r in result["runs"]):
                continue
            print(f"--- {backbone} {strategy} {settings}", flush=True)
            row = run_child(strategy, backbone, path.parent / "lora_runs" / f"{Path(backbone).name}-{strategy}", settings,
                            args.data)
            print(f"    {100 * row['accuracy']:.2f}% in {row['wall_s']:.0f}s, peak {row['peak_rss_mb']} MB, "
                  f"{row['trainable_percent']:.2f}% of parameters trained", flush=True)
            result["runs"].append(row)
            result["machine"] = machine()
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
            tmp.replace(path)
    lines = ["| backbone | strategy | dev accuracy | trained parameters | fit wall s | stage 2 s | epochs | "
             "peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        ft = r["finetune"]
        lines.append(f"| {r['backbone']} | {r['strategy']} {r['settings'] or ''} | {100 * r['accuracy']:.1f}% | "
                     f"{r['trainable_parameters']:,} ({r['trainable_percent']:.2f}%) | {r['wall_s']:.0f} | "
                     f"{r['timings'].get('train', 0) - r['timings'].get('head_stage', 0):.0f} | "
                     f"{ft.get('epochs_run')} | {r['peak_rss_mb']:,} |")
    print("\n" + "\n".join(lines))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
