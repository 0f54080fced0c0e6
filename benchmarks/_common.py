"""Shared helpers for the benchmark scripts: machine description, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "datasets"
OUT = ROOT / "out"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": date.today().isoformat(), "commit": git_commit(), "cpu": cpu, "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def git_commit() -> str:
    """The commit the benchmark ran at ("" outside a git checkout), recorded with its results."""
    import subprocess

    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def quiet_fits(cache: Path) -> None:
    """Settings for a benchmark that runs many fits: its own embedding cache, no progress bars or tokenizer
    threads, and only warnings and errors in the log (Lightning's banners and a deprecation it repeats muted)."""
    import logging
    import warnings

    os.environ.setdefault("HEADSTART_CACHE", str(cache))
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                  "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")


def load_runs(path: Path) -> dict[str, Any]:
    """A resumable benchmark's results so far ({"runs": [...]}, empty when `path` does not exist yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return json.loads(path.read_text()) if path.is_file() else {"runs": []}


def append_run(path: Path, result: dict[str, Any], row: dict[str, Any], table: Callable[[list], str]) -> None:
    """Add one finished run to `result` with the machine and the summary table, and rewrite `path` atomically,
    so that an interrupted benchmark keeps every run it finished."""
    result["runs"].append(row)
    result["machine"] = machine()
    result["table"] = table(result["runs"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(path)


def shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        raise SystemExit(f"benchmark data missing: {path} (see ../shared/datasets/README.md)")
    return path


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(name: str, results: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    return path


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured dense matrix-multiply FLOP/s for `dtype` on this CPU: the practical compute ceiling."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table, printed and pasted into RESULTS.md."""
    def fmt(v: Any) -> str:
        return f"{v:,.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# --smoke: every script can check that it still runs, in seconds, on tiny generated data (issue 26). The test suite
# runs each script so (`pytest -m benchmarks_smoke`); the numbers mean nothing and go to a temporary folder.
SMOKE_HELP = ("check that the script still runs: tiny generated data and a small random CNN, a few seconds; results "
              "go to a temporary folder, never to benchmarks/out")


def add_smoke_option(parser: Any) -> None:
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)


def start_smoke() -> Path:
    """A temporary folder for a smoke run: results (write_results) and the embedding cache go there, so that a
    smoke run never overwrites a real result."""
    global OUT
    folder = Path(tempfile.mkdtemp(prefix="headstart-bench-smoke-"))
    OUT = folder / "out"
    os.environ["HEADSTART_CACHE"] = str(folder / "cache")
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    print(f"smoke run: tiny generated data, results in {OUT}", flush=True)
    return folder


SMOKE_SKIPPED = "smoke run skipped:"  # tests/test_benchmarks.py skips a script whose smoke run prints this


def skip_smoke(reason: str) -> None:
    """End a smoke run whose prerequisite outside the project (a side install, a browser, root) is absent here,
    saying which; tests/test_benchmarks.py turns it into a skip with that reason."""
    print(f"{SMOKE_SKIPPED} {reason}", flush=True)
    raise SystemExit(0)


def smoke_images(root: Path, per_class: int = 12, size: int = 20,
                 classes: tuple[str, ...] = ("red", "green", "blue")) -> Path:
    """Noisy images whose dominant colour is their class (cycling red, green, blue past three classes): tiny, real
    PNG files (hand-written because the tests' generator lives in tests/, which the benchmarks do not import)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size, size, 3))
            pixels[..., c % 3] += 150
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def smoke_run(folder: Path, strategy: str = "finetune") -> Path:
    """A run folder (RUN/model inside) fitted in seconds: the random `smallcnn` backbone, one epoch, on
    smoke_images, with validation and test splits of 6 images each."""
    import headstart

    images = smoke_images(folder / "images")
    headstart.fit(images, "smallcnn", strategy, out=folder / f"run-{strategy}", epochs=1, val_size=6, test_size=6)
    return folder / f"run-{strategy}"


def smoke_text(folder: Path, per_class: int = 30) -> tuple[Path, Path]:
    """A tiny sentiment table (clearly positive and negative sentences) and a random 2-layer, 32-wide BERT with
    MiniLM's tokenizer saved as a backbone folder: a text task that fits in seconds without downloads."""
    import numpy as np
    from transformers import AutoTokenizer, BertConfig, BertModel

    from headstart.backbones.hf_text import minilm_location

    rng = np.random.default_rng(0)
    good = ["wonderful", "great", "delightful", "excellent", "lovely", "superb"]
    bad = ["terrible", "awful", "boring", "dreadful", "dull", "tedious"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["text,label"]
    for i in range(per_class):
        lines += [f"a {rng.choice(good)} and {rng.choice(good)} film number {i},positive",
                  f"a {rng.choice(bad)} and {rng.choice(bad)} film number {i},negative"]
    table_path = folder / "reviews.csv"
    table_path.write_text("\n".join(lines) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(minilm_location(), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(0)
    bert = folder / "tiny-bert"
    BertModel(config).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    return table_path, bert


def smoke_exported_model(folder: Path) -> Path:
    """smoke_run's model folder with model.onnx and model.int8.onnx exported into it (for the runtime benchmarks)."""
    from headstart.export import export_onnx

    model_dir = smoke_run(folder) / "model"
    export_onnx(model_dir)
    export_onnx(model_dir, quantize="int8", force=True)
    return model_dir


def smoke_audio(root: Path, per_class: int = 6, rate: int = 16000) -> Path:
    """Noisy tones whose pitch is their class ("low", "mid", "high"), 0.5 s each: tiny, real wav files
    (hand-written for the same reason as smoke_images)."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    for name, freq in {"low": 300.0, "mid": 900.0, "high": 2400.0}.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        t = np.arange(rate // 2) / rate
        for i in range(per_class):
            wave = 0.5 * np.sin(2 * np.pi * freq * rng.uniform(0.95, 1.05) * t) + 0.05 * rng.standard_normal(len(t))
            soundfile.write(root / name / f"{name}_{i}.wav", wave.astype(np.float32), rate)
    return root


def smoke_text_folder(folder: Path, per_class: int = 12) -> tuple[Path, Path]:
    """SST-2's layout (train.csv and dev.csv, two thirds and one third of smoke_text's sentences) and the tiny BERT
    folder: what the SST-2 benchmarks read, made in a second."""
    table_path, bert = smoke_text(folder, per_class)
    lines = table_path.read_text().splitlines()
    rows, cut = lines[1:], 2 * (len(lines) - 1) // 3  # the sentences alternate their class: both halves hold both
    data = folder / "sst2-like"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.csv").write_text("\n".join([lines[0], *rows[:cut]]) + "\n")
    (data / "dev.csv").write_text("\n".join([lines[0], *rows[cut:]]) + "\n")
    return data, bert
