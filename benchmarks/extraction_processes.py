"""Extraction throughput: 2 processes x 1 thread (torchrun) against 1 process x 2 threads, side by side in one run.

    python benchmarks/extraction_processes.py [--texts 400] [--images 200] [--repeats 2]

Both layouts run the product's path, `headstart.embeddings.embed_items` without a cache: under torchrun each rank
embeds its contiguous share and the ranks gather the rows (gloo on loopback); alone, one process embeds them all.
One process of one thread is measured too, as the reference
for both. Each layout is a fresh launch (`OMP_NUM_THREADS` 1 per rank, or 2), the repeats interleaved, so that
the machine's load falls on all alike. Per layout: the extraction's throughput (from after the model is loaded and warmed up to
every rank holding every row) and the launch's wall time including Python, torch and the model's loading; and how
far the two compared layouts' embeddings differ (bfloat16 where the CPU has it rounds differently with other batches).
Texts: SST-2 sentences with minilm; images: CIFAR-10 with efficientnet_lite0 (its decoding in the product's data
loader workers, in each rank). Prints a table and writes benchmarks/out/extraction_processes.json with the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import (
    add_smoke_option,
    git_commit,
    median,
    shared,
    smoke_images,
    smoke_text,
    start_smoke,
    table,
    write_results,
)

REPOSITORY = Path(__file__).resolve().parents[1]
# The two layouts compared, and one process of one thread as the reference for both (what one core does).
LAYOUTS = {"2 processes x 1 thread": (2, 1), "1 process x 2 threads": (1, 2), "1 process x 1 thread": (1, 1)}
COMPARED = ("2 processes x 1 thread", "1 process x 2 threads")
HANG_GUARD_S = 1800  # far above these runs' minutes; only so that a hung rendezvous cannot hang the benchmark


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, threads: int, backbone: str, items: Path, results: Path) -> float:
    """Run the worker as `processes` ranks of `threads` torch threads each; the launch's wall seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env |= {"OMP_NUM_THREADS": str(threads), "HEADSTART_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false",
            "GLOO_SOCKET_IFNAME": "lo",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY / "src"), env.get("PYTHONPATH")]))}
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1",
                "--master-port", str(_free_port())] if processes > 1 else []
    worker = [str(Path(__file__).resolve()), "--worker", backbone, str(items), str(results)]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *launcher, *worker], env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{processes} x {threads} on {backbone} failed:\n{done.stderr[-4000:]}")
    return seconds


def worker(backbone_name: str, items_file: Path, results: Path) -> None:
    """One layout's extraction, in each of its processes: rank 0 writes the seconds and every row."""
    import torch

    from headstart import distributed
    from headstart.backbones import resolve_backbone
    from headstart.embeddings import compute_embeddings, embed_items

    backbone = resolve_backbone(backbone_name)
    items = json.loads(items_file.read_text())
    if backbone.modality == "image":
        items = [Path(p) for p in items]
    compute_embeddings(backbone, items[:8])  # warm-up: first-call allocations and kernels' choices
    distributed.barrier()
    started = time.perf_counter()
    rows, failures = embed_items(backbone, items)
    distributed.barrier()
    seconds = time.perf_counter() - started
    if distributed.is_main():
        np.save(results.with_suffix(".npy"), rows)
        results.write_text(json.dumps({"seconds": seconds, "items": len(items), "failures": len(failures),
                                       "ranks": distributed.world_size(), "threads": torch.get_num_threads()}))


def measure(backbone: str, items: list, folder: Path, repeats: int, layouts: tuple[str, ...]) -> list[dict]:
    """The `layouts` on `items`, interleaved `repeats` times: one row per layout, medians."""
    items_file = folder / f"{backbone}-items.json"
    items_file.write_text(json.dumps([str(i) for i in items]))
    runs: dict[str, list[tuple[float, dict]]] = {name: [] for name in layouts}
    rows_of = {}
    for repeat in range(repeats):
        for name in layouts:
            processes, threads = LAYOUTS[name]
            results = folder / f"{backbone}-{processes}x{threads}-{repeat}.json"
            wall = launch(processes, threads, backbone, items_file, results)
            runs[name].append((wall, json.loads(results.read_text())))
            rows_of[name] = np.load(results.with_suffix(".npy"))
            print(f"  {backbone}, {name}, repeat {repeat + 1}: {runs[name][-1][1]['seconds']:.1f} s extraction, "
                  f"{wall:.1f} s launch", flush=True)
    a, b = (rows_of[name] for name in COMPARED)
    difference = np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    base = median([r["seconds"] for _, r in runs["1 process x 2 threads"]])
    out = []
    for name, measured in runs.items():
        seconds = median([r["seconds"] for _, r in measured])
        out.append({"backbone": backbone, "items": len(items), "layout": name,
                    "items/s (extraction)": len(items) / seconds, "wall s incl. start": median([w for w, _ in measured]),
                    "speed vs 1x2": base / seconds,
                    "rel. row difference (max)": float(difference.max()) if name in COMPARED else "",
                    "extraction_s": [r["seconds"] for _, r in measured], "wall_s": [w for w, _ in measured],
                    "ranks": measured[0][1]["ranks"], "threads": measured[0][1]["threads"]})
    return out


COLUMNS = ["backbone", "items", "layout", "items/s (extraction)", "wall s incl. start", "speed vs 1x2",
           "rel. row difference (max)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=400, help="SST-2 sentences embedded with minilm (0: none)")
    parser.add_argument("--images", type=int, default=200, help="CIFAR-10 images embedded with efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", nargs=3, metavar=("BACKBONE", "ITEMS", "RESULTS"), help=argparse.SUPPRESS)
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))

    layouts = tuple(LAYOUTS)
    if args.smoke:  # 12 generated sentences, one repeat, the compared layouts: two launches (images: the same path)
        folder = start_smoke()
        text_table, _ = smoke_text(folder / "text", per_class=6)
        image_root = smoke_images(folder / "images", per_class=4)
        args.texts, args.images, args.repeats, layouts = 12, 0, 1, COMPARED
    else:
        folder = _common.OUT / "extraction-processes"
        folder.mkdir(parents=True, exist_ok=True)
        text_table, image_root = shared("text/sst2/train.csv"), shared("images/cifar10/train")
    rows = []
    if args.texts:
        import pandas as pd

        texts = pd.read_csv(text_table).sample(n=args.texts, random_state=0)["text"].tolist()
        rows += measure("minilm", texts, folder, args.repeats, layouts)
    if args.images:
        from headstart.modalities import get_modality

        classes = sorted(p for p in image_root.iterdir() if p.is_dir())
        per_class = -(-args.images // len(classes))
        images = [f for c in classes for f in get_modality("image").list_files(c)[:per_class]][:args.images]
        rows += measure("efficientnet_lite0", images, folder, args.repeats, layouts)
    text = table(rows, COLUMNS)
    print(f"\n{text}")
    write_results("extraction_processes", {"commit": git_commit(), "args": vars(args), "cores": os.cpu_count(),
                                           "runs": rows, "table": text})


if __name__ == "__main__":
    main()
