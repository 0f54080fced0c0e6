"""Shared helpers for the benchmark scripts: machine description, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
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
    return {"date": date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


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
