"""Issue 24 acceptance, speed: wall time of `headstart.audit` on 50,000 items whose embeddings are cached.

The issue asks for an audit of 50,000 cached items in under a minute on 2 cores after the embedding pass. Embedding
50,000 real items first would cost an hour of this machine's CPU, so the cache is filled with synthetic embeddings
instead: 50,000 distinct short texts, each stored in the backbone's embedding cache (its own folder,
benchmarks/out/audit_speed_cache) under the text's content digest with a vector drawn around one of 10 class
centres (384 dimensions for minilm, 768 for mpnet; 10% of the labels flipped, a few near copies), so that
`headstart.audit(table, backbone)` runs end to end, as a user's would on a second call: reading the table, splitting,
cache lookup, label errors, duplicates and leaks, outliers. No backbone forward pass runs (every item hits).
Prints the wall time of each step, the CPU time, and the load average beside it (the shared machine is loaded).

  PYTHONPATH=src python benchmarks/audit_speed.py                  # 50,000 items, minilm's 384 dimensions
  PYTHONPATH=src python benchmarks/audit_speed.py --backbone mpnet  # 768 dimensions
  PYTHONPATH=src python benchmarks/audit_speed.py --smoke
"""

from __future__ import annotations

import argparse
import os
import time

import _common
import numpy as np
from _common import add_smoke_option, start_smoke, table


def synthetic(items: int, dim: int, classes: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """Texts, labels (10% flipped) and embeddings around class centres; 0.2% of the items are near copies of
    another item."""
    rng = np.random.default_rng(seed)
    texts = [f"synthetic item {i} for the audit speed benchmark" for i in range(items)]
    truth = rng.integers(classes, size=items)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    x = centres[truth] + rng.normal(scale=1.5, size=(items, dim)).astype(np.float32)
    copies = rng.choice(items, max(1, items // 500), replace=False)
    x[copies] = x[rng.choice(items, len(copies))] + rng.normal(scale=0.05, size=(len(copies), dim))
    labels = truth.copy()
    flipped = rng.choice(items, items // 10, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, classes, size=len(flipped))) % classes
    return texts, [f"class{c}" for c in labels], x.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:
        folder = start_smoke()
        _, bert = _common.smoke_text(folder / "text", per_class=2)
        args.backbone, args.items, max_length = str(bert), 300, 16
    else:
        folder = _common.OUT / "audit_speed"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["HEADSTART_CACHE"] = str(_common.OUT / "audit_speed_cache")
        os.environ.setdefault("HEADSTART_PROGRESS", "0")
        max_length = None
    import pandas as pd

    import headstart
    from headstart.backbones import resolve_backbone
    from headstart.embedding_cache import backbone_cache
    from headstart.modalities import get_modality

    net = resolve_backbone(args.backbone, max_length=max_length, modality="text")
    texts, labels, x = synthetic(args.items, net.embedding_dim, args.classes, args.seed)
    store = backbone_cache(net, "auto")
    if store is not None:  # a random-weight backbone (the smoke run) is never cached: it embeds for real
        digest = get_modality("text").digest
        known, _ = store.lookup([digest(t) for t in texts[:1]], net.embedding_dim, count=False)
        if not known.any():
            store.store([digest(t) for t in texts], x)
    table_path = folder / "items.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(table_path, index=False)
    load_before = os.getloadavg()
    cpu_before = time.process_time()
    started = time.perf_counter()
    result = headstart.audit(table_path, args.backbone, max_length=max_length)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    load_after = os.getloadavg()
    row = {"items": args.items, "dim": net.embedding_dim, "wall s": round(wall, 1), "CPU s": round(cpu, 1),
           **{f"{k} s": v for k, v in result.seconds.items()},
           "load before (1/5/15 min)": "/".join(f"{v:.1f}" for v in load_before),
           "load after": "/".join(f"{v:.1f}" for v in load_after), "cores": os.cpu_count()}
    print(table([row], list(row)))
    print("findings:", result.counts())
    _common.write_results("audit_speed" if args.backbone == "minilm" or args.smoke else f"audit_speed_{args.backbone}",
                          {"settings": vars(args), "result": row, "counts": result.counts()})


if __name__ == "__main__":
    main()
