"""Where the time of headstart's embedding path goes: PyTorch profiler over the default extraction path.

    python benchmarks/profile_extraction.py [--backbone efficientnet_lite0] [--items 512]

Prints the top operators by self CPU time in the main process, and the split between waiting for decoded
batches (DataLoader) and model compute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import add_smoke_option, smoke_images, start_smoke, write_results
from embedding_throughput import image_items, text_items

from headstart.backbones import resolve_backbone
from headstart.embeddings import compute_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--items", type=int, default=512)
    add_smoke_option(parser)
    args = parser.parse_args()
    backbone = resolve_backbone(args.backbone, pretrained=not args.backbone.startswith("timm:"))
    if args.smoke:  # 12 generated images (an image backbone, the default, only)
        args.items = 12
        items = image_items(args.items, smoke_images(start_smoke() / "images"))[0]
    else:
        items = (image_items if backbone.modality == "image" else text_items)(args.items)[0]
    compute_embeddings(backbone, items[:64], device=torch.device("cpu"))  # warm-up
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        compute_embeddings(backbone, items, device=torch.device("cpu"))
    wall = time.perf_counter() - start
    averages = prof.key_averages()
    top = averages.table(sort_by="self_cpu_time_total", row_limit=15)
    print(top)
    total = sum(e.self_cpu_time_total for e in averages) / 1e6
    waiting = sum(e.self_cpu_time_total for e in averages if "DataLoader" in e.key or "dataloader" in e.key) / 1e6
    print(f"wall {wall:.1f}s for {len(items)} items; profiled self CPU {total:.1f}s; DataLoader-related {waiting:.2f}s")
    _common.OUT.mkdir(parents=True, exist_ok=True)
    (_common.OUT / f"profile_{args.backbone.replace(':', '_')}.txt").write_text(top)
    write_results(f"profile_{args.backbone.replace(':', '_')}", {"wall_s": wall, "items": len(items),
                                                                  "top_ops": top.splitlines()})


if __name__ == "__main__":
    main()
