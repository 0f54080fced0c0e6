"""Issue 23 acceptance: named entities on WNUT-17 (token tagging). Not a test: the lead engineer runs it.

`fit` on ../shared/datasets/text/wnut17/train.conll (the task, `tokens`, is chosen from the file) with `test=`
dev.conll (1,009 sentences): the validation split is cut from train (10%, the default). Each backbone asked
(minilm by default) with each strategy asked (finetune by default; `--strategy probe`: a linear head on the frozen
encoder's word states, one encoder pass). Records the entity precision, recall and F1 on dev (exact span and type, by
seqeval), per type, token accuracy, the fit's time and the process's peak memory, and the speed of `predict` on
1,000 dev sentences given as raw text (PyTorch, fp32).

Each finished run is appended to benchmarks/out/tokens_accuracy.json with the machine and the git commit; a second
invocation skips the runs already there (`--again` reruns them). Prints a Markdown table.

  PYTHONPATH=src nice -n 5 python benchmarks/tokens_accuracy.py                       # minilm, 3 epochs, max_length 64
  PYTHONPATH=src python benchmarks/tokens_accuracy.py --backbone minilm --backbone mpnet --epochs 3
  PYTHONPATH=src nice -n 19 python benchmarks/tokens_accuracy.py --strategy probe --backbone minilm --backbone mpnet
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common
from _common import add_smoke_option, append_run, load_runs, peak_rss_mb, quiet_fits, shared, start_smoke, table

COLUMNS = ["run", "test n", "entity F1", "precision", "recall", "token acc", "fit s", "train s", "peak MB",
           "predict sent/s"]
PREDICT_SENTENCES = 1000


def smoke_data(folder: Path) -> tuple[Path, Path, str]:
    """Tiny generated CoNLL train and dev files and a random tiny BERT (seconds, no downloads)."""
    import numpy as np
    from _common import smoke_text

    _, bert = smoke_text(folder / "text")
    rng = np.random.default_rng(0)
    people, places = ["Alice", "Bob", "Zoë", "Jürgen"], ["Paris", "Zürich", "São Paulo"]

    def write(path: Path, n: int) -> Path:
        lines = []
        for _ in range(n):
            place = places[rng.integers(len(places))].split()
            lines += ["met\tO", f"{people[rng.integers(len(people))]}\tB-person", "in\tO"]
            lines += [f"{w}\t{'B' if j == 0 else 'I'}-location" for j, w in enumerate(place)] + [".\tO", ""]
        path.write_text("\n".join(lines) + "\n")
        return path

    return write(folder / "train.conll", 60), write(folder / "dev.conll", 20), str(bert)


def run_name(backbone: str, strategy: str, args: argparse.Namespace) -> str:
    """The run's name in the results: the backbone, the strategy and the settings that differ between runs (the
    probe takes its own defaults: its head trains until validation loss stops falling)."""
    name = f"wnut17 {Path(backbone).name if args.smoke else backbone} {strategy}"
    if strategy == "probe":
        changed = [f"{k} {v:g}" for k, v in (("epochs", args.probe_epochs), ("lr", args.probe_lr)) if v is not None]
        return f"{name}, {', '.join(changed)}" if changed else name
    settings = [f"{args.epochs} epoch{'s' * (args.epochs != 1)}"] + [f"{k} {v:g}" for k, v in (("lr", args.lr),
                                                                       ("label smoothing", args.label_smoothing))
                                            if v is not None]
    return f"{name}, {', '.join(settings)}"


def strategy_settings(strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    """The command line's training settings for `strategy`: finetune's epochs, lr, batch and smoothing; none for
    the probe, which runs with its defaults unless --probe-epochs or --probe-lr say otherwise."""
    if strategy == "probe":
        return {k: v for k, v in (("epochs", args.probe_epochs), ("lr", args.probe_lr)) if v is not None}
    smoothing = {"label_smoothing": args.label_smoothing} if args.label_smoothing is not None else {}
    return {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, **smoothing}


def fit_once(backbone: str, strategy: str, args: argparse.Namespace, train: Path, dev: Path, run_root: Path
             ) -> dict[str, Any]:
    import headstart

    name = run_name(backbone, strategy, args)
    settings = strategy_settings(strategy, args)
    started = time.perf_counter()
    model = headstart.fit(train, backbone, strategy, test=dev, out=run_root / name.replace(" ", "-").replace(",", ""),
                          overwrite=True, max_length=args.max_length, seed=args.seed, **settings)
    seconds = time.perf_counter() - started
    m = model.metrics
    texts = _raw_sentences(dev, PREDICT_SENTENCES)
    t = time.perf_counter()
    model.predict(texts)
    predict_s = time.perf_counter() - t
    return {"run": name, "backbone": backbone, "test n": m["n"], "entity F1": round(m["f1"], 4),
            "precision": round(m["precision"], 4), "recall": round(m["recall"], 4),
            "token acc": round(m["token_accuracy"], 4), "macro F1": round(m["macro_f1"], 4),
            "fit s": round(seconds, 1), "train s": model.manifest.timings.get("train"),
            "peak MB": round(peak_rss_mb()), "predict sent/s": round(len(texts) / predict_s, 1),
            "per_type": m["per_type"], "type_confusion": m.get("type_confusion"),
            "strategy": strategy, "options": {"max_length": args.max_length, "seed": args.seed, **settings},
            "timings": model.manifest.timings,
            "training": model.manifest.training.get("finetune") or model.manifest.training.get("head_stage")}


def _raw_sentences(conll: Path, n: int) -> list[str]:
    """The first `n` sentences of a CoNLL file as raw text (words joined by spaces), repeated to `n` if fewer."""
    from headstart.data.conll import read_conll_sentences

    words = read_conll_sentences(conll)[0]
    return [" ".join(words[i % len(words)]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", action="append", help="backbone(s) to fit (default minilm)")
    parser.add_argument("--strategy", action="append", choices=["finetune", "probe"],
                        help="strategies to fit each backbone with (default finetune; --smoke: both)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="default: the backbone family's (3e-4 for text)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--label-smoothing", type=float, default=None, help="default: finetune's (0.1)")
    parser.add_argument("--probe-epochs", type=int, default=None, help="the probe's epochs (default: its 60)")
    parser.add_argument("--probe-lr", type=float, default=None, help="the probe's lr (default: its 1e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--again", action="store_true", help="rerun runs already in the results file")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:
        folder = start_smoke()
        train, dev, bert = smoke_data(folder / "data")
        backbones, args.epochs, args.max_length = [bert], 1, 16
        strategies = args.strategy or ["finetune", "probe"]
    else:
        train, dev = shared("text/wnut17/train.conll"), shared("text/wnut17/dev.conll")
        backbones = args.backbone or ["minilm"]
        strategies = args.strategy or ["finetune"]
    quiet_fits(_common.OUT / "cache")
    path = _common.OUT / "tokens_accuracy.json"
    result = load_runs(path)
    done = {r["run"] for r in result["runs"]}
    for backbone in backbones:
        for strategy in strategies:
            name = run_name(backbone, strategy, args)
            if name in done and not args.again:
                print(f"skipping {name} (in {path}; --again reruns it)")
                continue
            result["runs"] = [r for r in result["runs"] if r["run"] != name]
            row = fit_once(backbone, strategy, args, train, dev, _common.OUT / "runs")
            append_run(path, result, row, lambda rows: table(rows, COLUMNS))
            print(table(result["runs"], COLUMNS), flush=True)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
