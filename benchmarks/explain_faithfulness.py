"""Issue 12: are the explanations faithful? The deletion test (Petsiuk et al. 2018) on 200 held-out items per
model: delete the top-attributed 20% of pixels (Grad-CAM) or tokens (Integrated Gradients) and compare the fall
of the predicted class's probability with that of deleting a random 20% (mean of 5 random draws). The target:
top beats random on at least 80% of items. Not a test: the lead engineer runs it.

  python benchmarks/explain_faithfulness.py benchmarks/out/runs/c10-lite0-ft benchmarks/out/runs/sst2-minilm-ft
  python benchmarks/explain_faithfulness.py benchmarks/out/runs/c10-lite0-probe --methods occlusion,gradcam

Items: the first 200 of each run's held-out test split (rebuilt from the manifest, as calibration.py does), or for
text runs with --text-data, the first 200 rows of that table (e.g. SST-2 dev.csv).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import add_smoke_option, smoke_run, start_smoke, table, write_results
from calibration import splits_of


def run_one(run: Path, n: int, text_data: str | None, fraction: float, draws: int,
            method: str | None) -> dict[str, Any]:
    import numpy as np

    import headstart
    from headstart.explain import deletion_check, explainer_for

    model = headstart.load(run / "model")
    if text_data and model.modality == "text":
        from headstart.data.tables import read_text_column

        items, where = read_text_column(Path(text_data), None)[:n], Path(text_data).name
    else:
        test = splits_of(model).test
        pick = np.random.default_rng(0).permutation(len(test))[:n]  # a stratified test split is sorted by class
        items, where = [test.items[i] for i in pick], "test split"
    explainer = explainer_for(model, method)
    started = time.perf_counter()
    explanations = explainer.explain(items)
    explain_s = time.perf_counter() - started
    check = deletion_check(explainer, explanations, fraction=fraction, random_draws=draws)
    return {"run": run.name, "method": explainer.method.split(" (")[0], "items": f"{len(items)} from {where}",
            "top beats random": round(check["share_top_beats_random"], 3),
            "mean drop, top 20%": round(check["mean_drop_top"], 4),
            "mean drop, random 20%": round(check["mean_drop_random"], 4),
            "explain s/item": round(explain_s / len(items), 3), **{"check": check}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run folders (RUN/model inside); not with --smoke")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--text-data", default=None)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--methods", default=None,
                        help="comma list of explanation methods (default: each model's modality's default)")
    parser.add_argument("--name", default="explain_faithfulness", help="results file: benchmarks/out/NAME.json")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.items, args.draws = [str(smoke_run(start_smoke()))], 4, 2
    elif not args.runs:
        parser.error("give at least one run folder (or --smoke)")
    rows = []
    methods = args.methods.split(",") if args.methods else [None]
    for run in map(Path, args.runs):
        for method in methods:
            rows.append(run_one(run, args.items, args.text_data, args.fraction, args.draws, method))
        print(table(rows, ["run", "method", "items", "top beats random", "mean drop, top 20%",
                           "mean drop, random 20%", "explain s/item"]), flush=True)
    write_results(args.name, {"rows": rows})


if __name__ == "__main__":
    main()
