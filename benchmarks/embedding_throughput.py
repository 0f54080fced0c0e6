"""Embedding throughput: a naive fp32 loop against headstart's extraction path, side by side in one run.

    python benchmarks/embedding_throughput.py [--images 1000] [--texts 2000] [--repeats 3]

Naive = what one writes first: PIL decode + torchvision transforms in the main process, fp32 eager, batch 32,
texts in file order padded per batch. headstart = `headstart.embeddings.compute_embeddings`, the product's
default path (decode in workers, JPEG draft mode, channels_last, bfloat16 autocast where the CPU has it,
inference mode, texts batched by length). Also reports the bf16-vs-fp32 embedding difference, the probe accuracy
with each, and how far each path is from the machine's measured matrix-multiply rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    OUT,
    add_smoke_option,
    machine,
    matmul_rate,
    median,
    shared,
    smoke_images,
    smoke_text,
    start_smoke,
    table,
    timed,
    write_results,
)

from headstart.backbones import resolve_backbone
from headstart.embeddings import compute_embeddings
from headstart.modalities import get_modality


def naive_images(backbone, paths: list[Path], batch_size: int = 32) -> np.ndarray:
    from PIL import Image
    from torchvision import transforms as T

    transform = T.Compose([T.Resize((backbone.image_size, backbone.image_size)), T.ToTensor(),
                           T.Normalize(backbone.mean, backbone.std)])
    backbone.eval().to(memory_format=torch.contiguous_format)
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[start:start + batch_size]])
            out.append(backbone(x).numpy())
    return np.concatenate(out)


def naive_texts(backbone, texts: list[str], batch_size: int = 32) -> np.ndarray:
    backbone.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            out.append(backbone(backbone.collate(texts[start:start + batch_size])).numpy())
    return np.concatenate(out)


def flops_per_item(backbone, items) -> float:
    """Useful FLOPs per item: an image at the model's input size; a text at its own (unpadded) length."""
    if backbone.modality == "image":
        sample = torch.randn(1, 3, backbone.image_size, backbone.image_size)
    else:
        sample = backbone.collate(items[:64])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone(sample)
    if backbone.modality == "image":
        return counter.get_total_flops()
    # Cost grows about linearly with tokens for short texts: scale by real tokens over padded tokens.
    padded_tokens = sample["attention_mask"].numel()
    mean_tokens = float(np.mean(backbone.token_lengths(items)))
    return counter.get_total_flops() / padded_tokens * mean_tokens


def probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(train_x), train_y)
    return float((clf.predict(scaler.transform(test_x)) == test_y).mean())


def image_items(n: int, root: Path | None = None) -> tuple[list[Path], np.ndarray]:
    root = root or shared("images/cifar10/train")
    classes = sorted(p.name for p in root.iterdir())
    per_class = n // len(classes)
    paths, labels = [], []
    for c, name in enumerate(classes):
        files = get_modality("image").list_files(root / name)[:per_class]
        paths += files
        labels += [c] * len(files)
    return paths, np.array(labels)


def text_items(n: int, table_path: Path | None = None) -> tuple[list[str], np.ndarray]:
    df = pd.read_csv(table_path or shared("text/sst2/train.csv")).sample(n=n, random_state=0)
    return df["text"].tolist(), (df["label"] == "positive").to_numpy().astype(int)


def measure(name: str, backbone, items, labels, naive, repeats: int) -> dict:
    """Interleave naive and fast runs; medians of `repeats`; plus the fp32/bf16 numerical check."""
    naive_t, fast_t = [], []
    for _ in range(repeats):
        t, naive_emb = timed(lambda: naive(backbone, items))
        naive_t.append(t)
        t, (fast_emb, _) = timed(lambda: compute_embeddings(backbone, items, device=torch.device("cpu")))
        fast_t.append(t)
    fp32_emb, _ = compute_embeddings(backbone, items, precision="fp32", device=torch.device("cpu"))
    rel = np.linalg.norm(fast_emb - fp32_emb, axis=1) / np.linalg.norm(fp32_emb, axis=1)
    half = len(items) // 2
    order = np.random.default_rng(0).permutation(len(items))
    tr, te = order[:half], order[half:]
    acc_fp32 = probe_accuracy(fp32_emb[tr], labels[tr], fp32_emb[te], labels[te])
    acc_fast = probe_accuracy(fast_emb[tr], labels[tr], fast_emb[te], labels[te])
    n = len(items)
    return {"backbone": name, "items": n, "naive_per_s": n / median(naive_t), "headstart_per_s": n / median(fast_t),
            "speedup": median(naive_t) / median(fast_t), "rel_diff_mean": float(rel.mean()),
            "rel_diff_max": float(rel.max()), "probe_acc_fp32": acc_fp32, "probe_acc_headstart": acc_fast,
            "naive_times_s": naive_t, "headstart_times_s": fast_t, "naive_check": float(
                np.linalg.norm(naive_emb - fp32_emb) / np.linalg.norm(fp32_emb))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", default="efficientnet_lite0,timm:resnet18,minilm")
    add_smoke_option(parser)
    args = parser.parse_args()
    image_root = text_table = None
    matmul_n = 2048
    if args.smoke:  # 12 generated images and sentences, one repeat, the two offline backbones, a small matmul
        folder = start_smoke()
        image_root, (text_table, _) = smoke_images(folder / "images"), smoke_text(folder / "text")
        args.images, args.texts, args.repeats, args.backbones, matmul_n = 12, 12, 1, "efficientnet_lite0,minilm", 256
    rate_fp32, rate_bf16 = matmul_rate(torch.float32, matmul_n), matmul_rate(torch.bfloat16, matmul_n)
    rows = []
    for name in args.backbones.split(","):
        backbone = resolve_backbone(name, pretrained=not name.startswith("timm:"))
        if backbone.modality == "image":
            items, labels = image_items(args.images, image_root)
            naive = naive_images
        else:
            items, labels = text_items(args.texts, text_table)
            naive = naive_texts
        flops = flops_per_item(backbone, items)
        row = measure(name, backbone, items, labels, naive, args.repeats)
        row["gflops_per_item"] = flops / 1e9
        row["naive_pct_of_fp32_peak"] = 100 * flops * row["naive_per_s"] / rate_fp32
        row["headstart_pct_of_bf16_peak"] = 100 * flops * row["headstart_per_s"] / rate_bf16
        rows.append(row)
        print(f"{name}: {row['naive_per_s']:.1f} -> {row['headstart_per_s']:.1f} items/s ({row['speedup']:.2f}x)",
              flush=True)
    print(f"\nmatmul rate: fp32 {rate_fp32 / 1e9:.0f} GFLOP/s, bf16 {rate_bf16 / 1e9:.0f} GFLOP/s "
          f"({machine()['cpu']}, {machine()['threads']} threads)\n")
    print(table(rows, ["backbone", "items", "naive_per_s", "headstart_per_s", "speedup", "rel_diff_mean",
                       "probe_acc_fp32", "probe_acc_headstart", "gflops_per_item", "naive_pct_of_fp32_peak",
                       "headstart_pct_of_bf16_peak"]))
    write_results("embedding_throughput", {"matmul_gflops": {"fp32": rate_fp32 / 1e9, "bf16": rate_bf16 / 1e9},
                                           "rows": rows, "args": vars(args)})


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    main()
