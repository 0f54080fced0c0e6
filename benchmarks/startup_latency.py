"""Start-up and single-item latency: what a command-line user and a server pay per call.

- `import headstart` and `headstart --help` / `headstart backbones` wall time (fresh processes, median of 5),
  and whether Lightning or Transformers were imported on the way;
- `predict_proba` on 1 image and on 1 sentence after `headstart.load` (median of 50 calls, first call apart).

Uses only the public API, so the same script measures an older checkout too:
`PYTHONPATH=/path/to/old/src python benchmarks/startup_latency.py --tag before`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_smoke_option, median, start_smoke, table, write_results

PROBE = ("import sys, time; t = time.perf_counter(); import headstart; d = time.perf_counter() - t; "
         "print(d, int('lightning' in sys.modules), int('transformers' in sys.modules))")


def _wall(args: list[str], repeats: int = 5) -> float:
    env = {**os.environ, "HEADSTART_PROGRESS": "0"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return median(times)


def startup_rows(repeats: int = 5) -> list[dict]:
    py = sys.executable
    outputs = [subprocess.run([py, "-c", PROBE], check=True, capture_output=True, text=True).stdout.split()
               for _ in range(repeats)]
    import_s = median([float(o[0]) for o in outputs])
    cli = [py, "-c", "import sys; from headstart.cli import main; sys.argv[0] = 'headstart'; main()"]
    return [
        {"what": "import headstart", "seconds": import_s, "imports lightning": bool(int(outputs[0][1])),
         "imports transformers": bool(int(outputs[0][2]))},
        {"what": "headstart --help", "seconds": _wall([*cli, "--help"], repeats)},
        {"what": "headstart backbones", "seconds": _wall([*cli, "backbones"], repeats)},
    ]


def _latency(model, item, calls: int = 50) -> tuple[float, float]:
    start = time.perf_counter()
    model.predict_proba([item])
    first = time.perf_counter() - start
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.predict_proba([item])
        times.append(time.perf_counter() - start)
    return first, median(times)


def latency_rows(workdir: Path, calls: int = 50) -> list[dict]:
    import numpy as np
    import pandas as pd
    from PIL import Image

    import headstart

    rng = np.random.default_rng(0)
    images = workdir / "images"
    for c, name in enumerate(("red", "green", "blue")):
        (images / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 90, (64, 64, 3))
            pixels[..., c] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(images / name / f"{i}.png")
    table_path = workdir / "texts.csv"
    pd.DataFrame({"text": [f"a {w} film {i}" for i in range(15) for w in ("great", "awful")],
                  "label": ["pos", "neg"] * 15}).to_csv(table_path, index=False)
    rows = []
    for what, data, backbone, item in (("1 image (efficientnet_lite0, 224 px)", images, "efficientnet_lite0",
                                        str(images / "red" / "0.png")),
                                       ("1 sentence (minilm)", table_path, "minilm", "a truly great film")):
        headstart.fit(str(data), backbone, "probe", out=workdir / backbone)
        model = headstart.load(workdir / backbone / "model")
        first, typical = _latency(model, item, calls)
        rows.append({"what": f"predict_proba, {what}", "first call ms": first * 1e3, "median ms": typical * 1e3})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="current", help="Label for this code version (e.g. before, after).")
    add_smoke_option(parser)
    args = parser.parse_args()
    repeats, calls = (1, 2) if args.smoke else (5, 50)
    if args.smoke:
        start_smoke()
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    start = startup_rows(repeats)
    print(table(start, ["what", "seconds", "imports lightning", "imports transformers"]))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEADSTART_CACHE"] = str(Path(tmp) / "cache")
        latency = latency_rows(Path(tmp), calls)
    print()
    print(table(latency, ["what", "first call ms", "median ms"]))
    write_results(f"startup_latency.{args.tag}", {"startup": start, "latency": latency})


if __name__ == "__main__":
    main()
