"""Probe wall time and peak memory at 1,000, 5,000 and 50,000 CIFAR-10 images, with and without the cache.

    python benchmarks/probe_scaling.py [--sizes 1000,5000,50000]

Each size runs `headstart fit FOLDER --strategy probe` twice in fresh processes: first with an empty embedding
cache, then again on the same data (everything cached: no backbone forward pass). Peak RSS is the largest
resident set of the fit process or its data-loading workers. The embeddings themselves take
N x 1280 x 4 bytes; the rest of the memory should not grow with N.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import OUT, add_smoke_option, shared, smoke_images, start_smoke, table, write_results

RUNNER = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); " \
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def subset_folder(n: int) -> Path:
    source = shared("images/cifar10/train")
    root = OUT / f"cifar10-first-{n}"
    for cls in sorted(p.name for p in source.iterdir()):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for f in sorted((source / cls).glob("*.jpg"))[: n // 10]:
            if not (folder / f.name).exists():
                (folder / f.name).symlink_to(f)
    return root


def fit_once(folder: Path, cache: Path, out: Path) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS MB, metrics) of one `headstart fit` in a fresh process."""
    env = {**os.environ, "HEADSTART_CACHE": str(cache), "HEADSTART_PROGRESS": "0"}
    cmd = [str(Path(sys.executable).with_name("headstart")), "fit", str(folder), "--backbone", "efficientnet_lite0",
           "--strategy", "probe", "--out", str(out)]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", RUNNER, *cmd], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    return wall, int(result.stdout.strip().splitlines()[-1]) / 1024, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,50000")
    add_smoke_option(parser)
    args = parser.parse_args()
    if args.smoke:  # 30 generated images, both fits
        args.sizes = "30"
        smoke_folder = smoke_images(start_smoke() / "images", per_class=10)
    rows = []
    for n in map(int, args.sizes.split(",")):
        if args.smoke:
            folder = smoke_folder
        else:
            folder = shared("images/cifar10/train") if n >= 50000 else subset_folder(n)
        cache = _common.OUT / f"scaling-cache-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        first = fit_once(folder, cache, _common.OUT / f"scaling-run-{n}")
        second = fit_once(folder, cache, _common.OUT / f"scaling-run-{n}-again")
        rows.append({"images": n, "first_fit_s": first[0], "second_fit_s": second[0],
                     "cache_speedup": first[0] / second[0], "peak_rss_mb": first[1],
                     "embeddings_mb": n * 1280 * 4 / 2**20, "rss_minus_embeddings_mb": first[1] - n * 1280 * 4 / 2**20,
                     "images_per_s_first": n / first[2]["timings"]["total"], "test_accuracy": first[2]["accuracy"],
                     "first_timings": first[2]["timings"], "second_timings": second[2]["timings"]})
        print(f"{n} images: {first[0]:.1f}s then {second[0]:.1f}s cached; peak RSS {first[1]:.0f} MB", flush=True)
    print(table(rows, ["images", "first_fit_s", "second_fit_s", "cache_speedup", "peak_rss_mb", "embeddings_mb",
                       "rss_minus_embeddings_mb", "images_per_s_first", "test_accuracy"]))
    write_results("probe_scaling", {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    main()
