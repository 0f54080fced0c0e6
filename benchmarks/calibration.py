"""Issue 12: temperature scaling, ECE before and after, accuracy unchanged. Not a test: the lead engineer runs it.

For each trained finetune run (RUN/model, trained beforehand with `headstart fit ... --out RUN`, which calibrates on
the validation split), the held-out test split is rebuilt from the manifest (same source, seed, sizes) and
evaluated: the metrics hold ECE, NLL and Brier with and without the temperature. `--extra` labeled data (e.g.
SST-2 dev.csv) are evaluated too. A run trained with --no-calibrate is calibrated here on its validation split with
`TrainedModel.calibrate`, as `fit` would. Probes on the same splits are fitted here with `headstart.fit`
(calibration on by default) and reported the same way. Prints a Markdown table, writes JSON.

  D=../shared/datasets
  python benchmarks/calibration.py --finetune benchmarks/out/runs/sst2-minilm-ft benchmarks/out/runs/c10-lite0-ft \\
      --extra benchmarks/out/runs/sst2-minilm-ft=$D/text/sst2/dev.csv \\
      --probe "$D/images/cifar10/train efficientnet_lite0 labels_per_class=500 val_size=1000 test_size=2000" \\
              "$D/text/sst2/train.csv minilm extra=$D/text/sst2/dev.csv"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import add_smoke_option, smoke_run, smoke_text, start_smoke, table, write_results

COLUMNS = ["task", "strategy", "evaluated on", "n", "T", "accuracy", "ECE before",
           "ECE after", "ECE after/before", "NLL before", "NLL after", "Brier before", "Brier after"]


def splits_of(model) -> Any:
    """The run's splits, rebuilt from its manifest (the same seeded draw `fit` made)."""
    from headstart.data import load_data, make_splits

    d = model.manifest.data
    raw = load_data(d.source, d.text_column, d.label_column)
    return make_splits(raw, d.val_size, d.test_size, d.labels_per_class, d.seed)


def row(task: str, strategy: str, where: str, after: dict, temperature: float) -> dict[str, Any]:
    """Before = the same probabilities without the temperature (the metrics carry both)."""
    before = {"accuracy": after["accuracy"], "ece": after["ece_uncalibrated"], "nll": after["nll_uncalibrated"],
              "brier": after["brier_uncalibrated"]}
    return {"task": task, "strategy": strategy, "evaluated on": where, "n": after["n"], "T": round(temperature, 3),
            "accuracy": round(after["accuracy"], 4),
            "ECE before": round(before["ece"], 4), "ECE after": round(after["ece"], 4),
            "ECE after/before": round(after["ece"] / before["ece"], 3),
            "NLL before": round(before["nll"], 4), "NLL after": round(after["nll"], 4),
            "Brier before": round(before["brier"], 4), "Brier after": round(after["brier"], 4)}


def finetune_rows(run: Path, extra: list[str]) -> list[dict[str, Any]]:
    import headstart

    model = headstart.load(run / "model")
    task = f"{Path(model.manifest.data.source).parent.name} {model.manifest.backbone_name}"
    splits = splits_of(model)
    if model.manifest.calibration is not None:  # calibrated by `fit` on its validation split
        record = model.manifest.calibration
    else:  # trained with --no-calibrate (or before calibration existed): calibrate on its validation split now
        record = model.calibrate(splits.val)
    rows = [row(task, "finetune", "test split", model.evaluate(splits.test), record["temperature"])]
    print(f"{run}: temperature {record['temperature']:.3f} on {record['n']} validation items", flush=True)
    rows += [row(task, "finetune", Path(data).name, model.evaluate(data), record["temperature"]) for data in extra]
    return rows


def probe_rows(spec: str) -> list[dict[str, Any]]:
    """A probe fitted here with `headstart.fit` (which calibrates on its validation split): spec is
    "SOURCE BACKBONE [labels_per_class=N] [val_size=N] [test_size=N] [extra=DATA]"."""
    import headstart

    source, backbone, *pairs = spec.split()
    options = dict(p.split("=", 1) for p in pairs)
    extra = options.pop("extra", None)
    model = headstart.fit(source, backbone, "probe", **{k: float(v) if "." in v else int(v) for k, v in options.items()})
    task = f"{Path(source).parent.name} {backbone}"
    print(f"{spec}: temperature {model.temperature:.3f} on {model.manifest.calibration['n']} validation items")
    rows = [row(task, "probe", "test split", model.metrics, model.temperature)]
    if extra:
        rows.append(row(task, "probe", Path(extra).name, model.evaluate(extra), model.temperature))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finetune", nargs="*", default=[], help="run folders of finetune runs")
    parser.add_argument("--extra", nargs="*", default=[], help="RUN=DATA: also evaluate RUN's model on DATA")
    parser.add_argument("--probe", nargs="*", default=[], help='"SOURCE BACKBONE [labels_per_class=N] [val_size=N] '
                        '[test_size=N] [extra=DATA]": fit and measure a probe')
    parser.add_argument("--name", default="calibration", help="results file: benchmarks/out/NAME.json")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # a finetune run fitted here, and a probe spec on generated sentences and a tiny random BERT
        folder = start_smoke()
        run = smoke_run(folder)
        reviews, bert = smoke_text(folder / "text")
        args.finetune, args.extra = [str(run)], [f"{run}={run.parent / 'images'}"]
        args.probe = [f"{reviews} {bert} val_size=10 test_size=10 extra={reviews}"]
    started = time.perf_counter()
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        run, data = item.split("=", 1)
        extra.setdefault(str(Path(run)), []).append(data)
    rows = []
    for run in map(Path, args.finetune):
        rows += finetune_rows(run, extra.get(str(run), []))
        print(table(rows, COLUMNS), flush=True)
    for spec in args.probe:
        rows += probe_rows(spec)
        print(table(rows, COLUMNS), flush=True)
    print("\n" + table(rows, COLUMNS))
    write_results(args.name, {"rows": rows, "wall_s": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
