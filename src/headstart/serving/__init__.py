"""`headstart serve`: a saved model (PyTorch) or its exported graph (ONNX Runtime, OpenVINO) behind HTTP.

`build_app` makes the FastAPI app, `serve` runs it with uvicorn. uvicorn handles SIGTERM and SIGINT: it stops
accepting connections, lets requests in flight finish (up to `graceful_s` seconds), then the app's lifespan
stops the batcher. With an ONNX runtime nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from ..runtime.codecs import get_codec
from ..runtime.onnx_model import ONNX_RUNTIMES, int8_kernels, load_runtime
from .app import Limits, create_app
from .batcher import DynamicBatcher, Overloaded

__all__ = ["DynamicBatcher", "Limits", "Overloaded", "build_app", "load_for_serving", "plain_access_lines", "serve"]
RUNTIMES = ("torch", *ONNX_RUNTIMES)
log = logging.getLogger("headstart")


def load_for_serving(model_dir: str | Path, runtime: str = "torch", threads: int | None = None
                     ) -> tuple[Any, Any, dict[str, Any]]:
    """(predictor, codec, metadata) for a model folder: the PyTorch model, or its exported graph."""
    if runtime not in RUNTIMES:
        raise SettingsError(f"--runtime must be one of {', '.join(RUNTIMES)}, got '{runtime}'")
    path = Path(model_dir).expanduser()
    if runtime == "torch":
        from .._util import default_device, describe_auto
        from ..model import load

        model = load(path)
        codec = get_codec(model.modality)(model.backbone.onnx_preprocessing(), path)
        meta = {"backbone": model.manifest.backbone_name, "modality": model.modality, "metrics": model.metrics,
                "runtime": "torch", "strategy": model.manifest.strategy.name,
                "precision": (describe_auto(default_device(), model.modality) if model.precision == "auto"
                              else model.precision),
                "evaluation_precision": model.manifest.evaluation_precision, "task": model.task_name,
                "task_params": model.task_params}
        return model, codec, meta
    model = load_runtime(path, runtime, threads)
    meta = {"backbone": model.manifest.backbone_name, "modality": model.modality, "metrics": model.metrics,
            "runtime": model.runtime, "parity": model.manifest.parity, "quantization": model.manifest.quantization,
            "precision": model.manifest.precision, "evaluation_precision": model.metrics.get("evaluation_precision"),
            "task": model.task_name, "task_params": model.task_params, "int8_kernels": int8_kernels()}
    return model, model.codec, meta


def build_app(model_dir: str | Path, runtime: str = "torch", max_batch: int = 32, max_wait_ms: float = 5.0,
              limits: Limits | None = None, threads: int | None = None, access_log: bool = True):
    """The FastAPI app serving `model_dir` (see `create_app`)."""
    if max_batch < 1:
        raise SettingsError(f"--max-batch must be at least 1, got {max_batch}")
    if max_wait_ms < 0:
        raise SettingsError(f"--max-wait-ms must be 0 or more, got {max_wait_ms}")
    predictor, codec, meta = load_for_serving(model_dir, runtime, threads)
    return create_app(predictor, codec, meta, max_batch, max_wait_ms, limits, access_log=access_log)


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, runtime: str = "torch",
          max_batch: int = 32, max_wait_ms: float = 5.0, limits: Limits | None = None, threads: int | None = None,
          graceful_s: int = 30, access_log: bool = True) -> None:
    """Serve until SIGTERM/SIGINT; requests in flight then finish before the process exits. `access_log`: one
    line per request on the `headstart.access` logger (method, path, status, items, ms)."""
    import uvicorn

    return_large_frees_to_the_os()
    if access_log:
        plain_access_lines()
    app = build_app(model_dir, runtime, max_batch, max_wait_ms, limits, threads, access_log=access_log)
    log.info("serving %s (%s) on http://%s:%d (docs at /docs; %s)", model_dir, runtime, host, port, _fast_io())
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=graceful_s)


def _fast_io() -> str:
    """Which event loop and HTTP parser uvicorn takes: uvloop and httptools when installed (the `serve` extra), else
    asyncio and h11 (0.25 instead of 0.15 ms of server CPU per request, RESULTS.md issue 27)."""
    import importlib.util

    fast = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name) is not None]
    return ", ".join(fast) + " in use" if fast else "pip install uvloop httptools for a faster server"


def plain_access_lines() -> None:
    """The access log written as plain lines to stderr (time, level, the line), not through the CLI's Rich handler:
    Rich laid out each line as a table, 15% of a busy text server's CPU samples (py-spy, RESULTS.md issue 27).
    Left alone when `headstart.access` already has a handler of its own (set up by the caller)."""
    access = logging.getLogger("headstart.access")
    if access.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    access.addHandler(handler)
    access.propagate = False


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def return_large_frees_to_the_os(threshold: int = 4 * 1024 * 1024) -> None:
    """glibc only: allocations of `threshold` bytes or more get their own mapping, so freeing them gives the
    memory back to the system, and a server's memory after a request returns to where it was before.

    Hand-written (ctypes `mallopt`) because nothing in Python sets it, and by default glibc raises its mmap
    threshold up to 32 MB as large blocks are freed: decoded images freed in worker threads then stay in those
    threads' arenas. Three requests of three 36-megapixel PNGs left 179 MB resident by default, 3 MB with this.
    Done by `serve` (which owns its process), not by `create_app` (which may run inside someone else's)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused; freed memory may stay with the process")
