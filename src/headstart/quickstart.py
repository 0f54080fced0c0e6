"""`headstart quickstart`: the whole path on the embedded digits set, from scratch against transfer."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from ._util import worker_count
from .api import fit
from .data import load_data, make_splits
from .model import load
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


# Chosen by measurement on 2 cores (issue 20): digits are 8x8, so the small CNN at 16 pixels sees all there is:
# 98.9% in 5 epochs against 99.4% in 15 epochs at 32 pixels (2 of 360 test images), for a tenth of the work;
# EfficientNet-Lite0 at 128 pixels embeds 3x faster than at 224 for about one point (95.3% against 96.4%).
# The whole quickstart: 44 s against 10 minutes before, on the same machine at the same load.
RUNS = {
    "smallcnn (from scratch)": dict(backbone="smallcnn", strategy="finetune", epochs=5, image_size=16),
    "efficientnet_lite0 probe (ImageNet transfer)": dict(backbone="efficientnet_lite0", strategy="probe",
                                                         image_size=128),
}
RELOAD_CHECK_ITEMS = 100  # test images both the trained and the reloaded model predict (the metrics are fit's)


@contextmanager
def _threads_beside_loader_workers() -> Iterator[None]:
    """Model threads plus data-loading workers no more than the cores: on 2 cores one model thread beside the one
    worker. Measured on a loaded 2-core machine, two model threads waiting on each other made each training step
    5-15x more expensive than one thread (issue 20)."""
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(before, cores - worker_count())))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_and_check(out: Path, console: Console) -> None:
    """Fit each run, reload it from disk, check that the reloaded model predicts what the trained one did, and
    show the test metrics fit measured (saved in the model folder)."""
    results = Table(title="held-out test split (360 images)")
    for col in ("model", "accuracy", "macro F1", "time", "saved to"):
        results.add_column(col)
    check = make_splits(load_data("digits")).test.items[:RELOAD_CHECK_ITEMS]
    for name, options in RUNS.items():
        console.print(f"[bold]fitting {name}[/]")
        run_dir = out / options["backbone"]
        trained = fit("digits", out=run_dir, **options)
        reloaded = load(run_dir / "model")
        metrics = reloaded.metrics
        same = reloaded.predict(check) == trained.predict(check)
        console.print(f"  reloaded from {run_dir / 'model'}: predictions identical to the trained model: {same} "
                      f"(on {len(check)} test images)")
        results.add_row(name, f"{metrics['accuracy']:.4f}", f"{metrics['macro_f1']:.4f}",
                        f"{trained.manifest.timings['total']:.0f}s", str(run_dir / "model"))
    console.print(results)


def _predict_examples(out: Path, console: Console) -> None:
    examples = _write_examples(out / "examples")
    console.print(f"[bold]predicting {len(examples)} example files with the transfer model[/]")
    model = load(out / "efficientnet_lite0" / "model")
    for record in prediction_records(model, examples, top_k=2):
        console.print(json.dumps(record), highlight=False, soft_wrap=True)


def run_quickstart(out: Path, console: Console) -> None:
    console.rule("headstart quickstart: digits (1,797 8x8 images, 10 classes), no download")
    started = time.perf_counter()
    with _threads_beside_loader_workers():
        _fit_and_check(out, console)
        _predict_examples(out, console)
    console.print(f"quickstart done in {time.perf_counter() - started:.0f}s")
    console.print(f"""
[bold]Next steps[/]
  headstart evaluate {out}/efficientnet_lite0/model digits --json   # the table's held-out split again
  headstart report {out}/efficientnet_lite0                          # the same numbers, as a page
  headstart predict {out}/efficientnet_lite0/model {out}/examples
  headstart fit path/to/images --backbone efficientnet_lite0 --strategy finetune --out runs/mine
  headstart fit reviews.csv --backbone minilm --strategy probe --out runs/text
  headstart backbones""")
