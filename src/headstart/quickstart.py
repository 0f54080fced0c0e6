"""`headstart quickstart`: the whole path on the embedded digits set, from scratch against transfer."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from .api import fit, load
from .data import load_data, make_splits
from .predict import prediction_records


def _write_examples(folder: Path, n: int = 5) -> list[Path]:
    """A few held-out digits as PNG files, so prediction runs on real files as a user's would."""
    test = make_splits(load_data("digits")).test
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"digit_{i}_true_{test.classes[test.labels[i]]}.png"
        Image.fromarray(test.items[i]).save(path)  # 8x8 as in training: resizing would shift the inputs
        paths.append(path)
    return paths


def run_quickstart(out: Path, console: Console) -> None:
    console.rule("headstart quickstart: digits (1,797 8x8 images, 10 classes), no download")
    runs = {
        "smallcnn (from scratch)": dict(backbone="smallcnn", strategy="finetune", epochs=15),
        "efficientnet_lite0 probe (ImageNet transfer)": dict(backbone="efficientnet_lite0", strategy="probe"),
    }
    results = Table(title="held-out test split (360 images)")
    for col in ("model", "accuracy", "macro F1", "time", "saved to"):
        results.add_column(col)
    test = make_splits(load_data("digits")).test
    for name, options in runs.items():
        console.print(f"[bold]fitting {name}[/]")
        run_dir = out / options["backbone"]
        trained = fit("digits", out=run_dir, **options)
        reloaded = load(run_dir / "model")
        metrics = reloaded.evaluate("digits")  # its recorded test split, as `headstart evaluate MODEL digits` does
        same = reloaded.predict(test.items) == trained.predict(test.items)
        console.print(f"  reloaded from {run_dir / 'model'}: accuracy {metrics['accuracy']:.4f}, "
                      f"predictions identical to the trained model: {same}")
        results.add_row(name, f"{metrics['accuracy']:.4f}", f"{metrics['macro_f1']:.4f}",
                        f"{trained.manifest.timings['total']:.0f}s", str(run_dir / "model"))
    console.print(results)
    examples = _write_examples(out / "examples")
    console.print(f"[bold]predicting {len(examples)} example files with the transfer model[/]")
    model = load(out / "efficientnet_lite0" / "model")
    for record in prediction_records(model, examples, top_k=2):
        console.print(json.dumps(record), highlight=False, soft_wrap=True)
    console.print(f"""
[bold]Next steps[/]
  headstart evaluate {out}/efficientnet_lite0/model digits --json   # the table's held-out split again
  headstart report {out}/efficientnet_lite0                          # the same numbers, as a page
  headstart predict {out}/efficientnet_lite0/model {out}/examples
  headstart fit path/to/images --backbone efficientnet_lite0 --strategy finetune --out runs/mine
  headstart fit reviews.csv --backbone minilm --strategy probe --out runs/text
  headstart backbones""")
