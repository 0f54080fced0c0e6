"""Where `auto` stops choosing `contrastive`: contrastive against probe as the number of classes grows (issue 13).

Banking77 (77 intents) cut to K classes (a seeded random choice of K), 8 labels per class, minilm, seed 0:
`headstart.fit` with `contrastive` and with `probe` on the same draw, accuracy on the held-out 20% of those
classes' questions. Prints a table and writes benchmarks/out/contrastive_classes.json.

  python benchmarks/contrastive_classes.py --classes 10,20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _common import OUT, add_smoke_option, quiet_fits, shared, smoke_text, start_smoke, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="10,20", help="numbers of classes, comma list")
    parser.add_argument("--labels", type=int, default=8, help="labels per class")
    add_smoke_option(parser)
    args = parser.parse_args()
    source, backbone = None, "minilm"
    if args.smoke:  # both classes of generated sentences, 4 labels each, on a tiny BERT
        source, bert = smoke_text(start_smoke() / "text", per_class=10)
        backbone, args.classes, args.labels = str(bert), "2", 4
    quiet_fits(OUT / "cache")

    import headstart
    from headstart.data import Dataset, load_data

    full = load_data(source or shared("text/banking77/train.csv")).train
    rows = []
    print("| classes | labels/class | contrastive | probe | contrastive s | probe s |\n|---|---|---|---|---|---|")
    for k in (int(v) for v in args.classes.split(",")):
        chosen = np.sort(np.random.default_rng(0).choice(len(full.classes), k, replace=False))
        keep = np.flatnonzero(np.isin(full.labels, chosen))
        remap = {int(c): i for i, c in enumerate(chosen)}
        data = Dataset("text", [full.items[i] for i in keep], [remap[int(full.labels[i])] for i in keep],
                       [full.classes[c] for c in chosen], name=f"banking77-{k}")
        row = {"classes": k, "labels_per_class": args.labels}
        for strategy in ("contrastive", "probe"):
            model = headstart.fit(data, backbone, strategy, labels_per_class=args.labels, seed=0)
            row[strategy] = model.metrics["accuracy"]
            row[f"{strategy}_s"] = model.manifest.timings["total"]
        rows.append(row)
        print(f"| {k} | {args.labels} | {100 * row['contrastive']:.1f}% | {100 * row['probe']:.1f}% | "
              f"{row['contrastive_s']:.0f} | {row['probe_s']:.0f} |", flush=True)
    write_results("contrastive_classes", {"rows": rows})


if __name__ == "__main__":
    main()
