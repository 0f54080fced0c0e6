"""Data bigger than memory (issue 28): peak memory of `fit --strategy probe` on tar shards of N small images.

Generates N distinct 16x16 PNGs (three colour classes) into WebDataset-style tar shards of 10,000 items, then runs
`headstart fit DATA --strategy probe` on them in a fresh process with its own embedding cache, once per N, and
records that process's peak resident memory (ru_maxrss), the largest DataLoader worker's, the wall time and the
items per second. The backbone is `smallcnn` with saved random weights (a probe needs "pre-trained" weights; the
numbers measure the data path, not the features). Lazy reading shows as a peak that barely grows with N: what does
grow is one reference, one label, one digest and one embedding row (128 floats) per item.

    python benchmarks/shards_memory.py                  # 20,000 and 200,000 items
    python benchmarks/shards_memory.py --sizes 20000 50000
    python benchmarks/shards_memory.py --sizes 2000 4000  # a short check that it runs (minutes, not seconds)
    python benchmarks/shards_memory.py --smoke            # 40 items: the script's path, in seconds
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_smoke_option, start_smoke, table, write_results

PER_SHARD = 10_000
IMAGE_SIDE = 16
HEAD_EPOCHS = 3  # the head's epochs over in-memory embeddings change the time, not the memory, measured

# Runs the CLI in this process and reports its peak memory (and that of its waited-for children, the DataLoader
# workers) on the last line, whatever the exit code.
RUNNER = r"""
import json, resource, sys
from headstart.cli import main
sys.argv = ["headstart", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
finally:
    kib = lambda who: resource.getrusage(who).ru_maxrss
    print("PEAK " + json.dumps({"self_kib": kib(resource.RUSAGE_SELF), "children_kib": kib(resource.RUSAGE_CHILDREN)}))
sys.exit(code)
"""


def write_image_shards(folder: Path, n: int, seed: int = 0) -> float:
    """n distinct noisy PNGs whose dominant channel is their class, as KEY.png + KEY.cls in tar shards; the MB written."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for start in range(0, n, PER_SHARD):
        with tarfile.open(folder / f"shard-{start // PER_SHARD:05d}.tar", "w") as tar:
            for i in range(start, min(n, start + PER_SHARD)):
                pixels = rng.integers(0, 90, (IMAGE_SIDE, IMAGE_SIDE, 3))
                pixels[..., i % 3] += 150
                buffer = io.BytesIO()
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
                for name, data in ((f"{i:08d}.png", buffer.getvalue()), (f"{i:08d}.cls", str(i % 3).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


def random_smallcnn(path: Path) -> Path:
    from safetensors.torch import save_model

    from headstart.backbones.smallcnn import SmallCNN

    save_model(SmallCNN(image_size=IMAGE_SIDE), str(path))
    return path


def measure_fit(data: Path, weights: Path, work: Path) -> dict:
    """`headstart fit DATA --strategy probe` in a fresh process with an empty cache: peak memory and time."""
    env = {**os.environ, "HEADSTART_CACHE": str(work / "cache"), "HEADSTART_PROGRESS": "0"}
    args = [str(data), "--backbone", "smallcnn", "--weights", str(weights), "--strategy", "probe",
            "--image-size", str(IMAGE_SIDE), "--epochs", str(HEAD_EPOCHS), "--out", str(work / "run")]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, "fit", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    line = next((x for x in reversed(done.stdout.splitlines()) if x.startswith("PEAK ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"fit failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    peak = json.loads(line.removeprefix("PEAK "))
    return {"peak_rss_mb": peak["self_kib"] / 1024, "largest_worker_rss_mb": peak["children_kib"] / 1024,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000], help="items per data set")
    parser.add_argument("--workdir", type=Path, default=None, help="where the shards go (default: a temp folder)")
    add_smoke_option(parser)
    args = parser.parse_args()
    sizes = args.sizes
    if args.smoke:
        args.workdir, sizes = start_smoke(), [40]  # one fresh fit: its cost is the process start, not the items
    root = Path(tempfile.mkdtemp(prefix="headstart-shards-", dir=args.workdir))
    weights = random_smallcnn(root / "smallcnn.safetensors")
    rows = []
    for n in sizes:
        started = time.perf_counter()
        megabytes = write_image_shards(root / f"data-{n}", n)
        print(f"{n:,} items: {megabytes:.0f} MB of shards written in {time.perf_counter() - started:.0f} s", flush=True)
        row = {"items": n, "shards": -(-n // PER_SHARD), "shards_mb": megabytes,
               **measure_fit(root / f"data-{n}", weights, root / f"work-{n}")}
        row["items_per_s"] = n / row["seconds"]
        rows.append(row)
        print(f"  peak RSS {row['peak_rss_mb']:.0f} MB, {row['seconds']:.0f} s, {row['items_per_s']:.0f} items/s",
              flush=True)
    base = rows[0]["peak_rss_mb"]
    for row in rows:
        row["peak_vs_smallest"] = row["peak_rss_mb"] / base
    summary = table(rows, ["items", "shards", "shards_mb", "peak_rss_mb", "peak_vs_smallest", "largest_worker_rss_mb",
                           "seconds", "items_per_s"])
    print(summary)
    write_results("shards_memory", {"rows": rows, "table": summary, "image_side": IMAGE_SIDE, "backbone": "smallcnn"})


if __name__ == "__main__":
    main()
