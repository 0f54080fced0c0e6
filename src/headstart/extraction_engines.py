"""Which engine computes the embedding pass: PyTorch, or the backbone as an ONNX graph run by ONNX Runtime or OpenVINO.

PyTorch (bfloat16 autocast, BatchNorm folded) is the reference. The other two run the same folded inference copy
exported to ONNX (the way `headstart export` exports a classifier, without the head), once per backbone and
library versions, kept in the user cache. Each graph engine is checked against PyTorch fp32 on the first items
it is given before it is used (`check_parity`): an engine that computes in fp32 (ONNX Runtime; OpenVINO at
`--precision fp32`) must agree to FP32_TOLERANCE (mean relative difference of the embedding rows); one that
computes in bfloat16 (OpenVINO on a CPU with native bf16, `--precision auto`) to twice what PyTorch's own
bfloat16 autocast differs from fp32 on those items (at least FP32_TOLERANCE). An engine that cannot be built,
fails that check, or fails later on a batch is skipped with a warning, and PyTorch computes instead: an engine
is only a speed-up.

`auto` (the default) measures each available engine on a few decoded items the first time a backbone is used on a
CPU at a precision, and keeps the fastest in the user cache (`choices.json`, written atomically); an explicit
engine is used as given. Small jobs (fewer than AUTO_MIN_ITEMS items) and GPUs stay on PyTorch: an export costs
seconds that a small job cannot win back.

The engine is ambient for a block of work (`using_engine`), as autocast is: `fit` sets it once around training
and calibration, and every extraction inside uses it, without threading a parameter through the strategies. The
test metrics stay PyTorch's, so that `evaluate` and `report` reproduce them to the last digit.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import logging
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed
from ._util import atomic_write_json, cpu_flags, installed_versions, precision_dtype, resolve_precision
from .backbones.base import Backbone
from .data.builtins import cache_root
from .modalities import get_modality
from .runtime.onnx_model import session_options
from .settings import check_choice

log = logging.getLogger("headstart")

ENGINES = ("torch", "onnx", "openvino")
ENGINE_CHOICES = ("auto", *ENGINES)
FP32_TOLERANCE = 1e-3  # mean relative row difference from PyTorch fp32 allowed for an fp32 engine (measured ~1e-6)
REDUCED_FACTOR = 2.0  # a bf16 engine may differ from fp32 by this many times PyTorch's own bf16 difference
CHECK_ITEMS = 8  # items decoded to export with and to check parity on
TIMING_ITEMS = 32  # items each engine embeds, after a warm-up call, when `auto` measures
AUTO_MIN_ITEMS = 500  # below this `auto` keeps PyTorch: an export and a measurement cost more than they save
CHOICES_FILE = "choices.json"
OPSET = 18


class EngineUnavailable(Exception):
    """An engine cannot compute this backbone here (not installed, not exportable, or not matching PyTorch)."""


@dataclass
class EngineChoice:
    """What computes the embedding pass, and why: `requested` (auto or an engine), `engine` (the one used),
    `how` (given, measured, a cached measurement, few items, a GPU), the measured `rates` (items per second) and
    the engines `skipped` with their reasons."""

    requested: str
    engine: str
    how: str
    precision: str = "auto"
    rates: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    _built: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def record(self) -> dict[str, Any]:
        """What the model manifest records (`extraction_engine`)."""
        return {"requested": self.requested, "engine": self.engine, "how": self.how,
                "computes": (resolve_precision(self.precision, torch.device("cpu")) if self.engine == "torch"
                             else graph_precision(self.engine, self.precision)),
                **({"rates_per_s": self.rates} if self.rates else {}), **({"skipped": self.skipped} if self.skipped else {})}


TORCH = EngineChoice("torch", "torch", "default")
_current: contextvars.ContextVar[EngineChoice] = contextvars.ContextVar("headstart_extraction_engine", default=TORCH)


@contextlib.contextmanager
def using_engine(choice: EngineChoice) -> Iterator[EngineChoice]:
    """Within the block, extractions that build their own model use `choice`'s engine."""
    token = _current.set(choice)
    try:
        yield choice
    finally:
        _current.reset(token)


def current_engine() -> EngineChoice:
    """The engine set by the innermost `using_engine` block; PyTorch outside any."""
    return _current.get()


def check_engine(engine: str) -> None:
    """A one-line settings error for an engine name that is not one of ENGINE_CHOICES."""
    check_choice("engine", engine, ENGINE_CHOICES)


def graph_precision(engine: str, precision: str) -> str:
    """What a graph engine computes in at `precision` on this CPU: ONNX Runtime always fp32; OpenVINO bf16 where
    PyTorch's autocast would be (a CPU with native bf16, `auto`), or when asked."""
    if engine == "onnx":
        return "fp32"
    return "bf16" if resolve_precision(precision, torch.device("cpu")) == "bf16" else "fp32"


def cache_precision(engine: str, precision: str) -> str:
    """The precision the embedding cache is keyed by. PyTorch keeps its key (`precision` as given, as before), fp32
    graph engines share PyTorch fp32's (they agree to FP32_TOLERANCE), and OpenVINO in bf16 gets its own: its
    rounding differs from PyTorch's bf16 by as much as bf16 differs from fp32."""
    if engine == "torch":
        return precision
    computes = graph_precision(engine, precision)
    return "fp32" if computes == "fp32" else f"{computes}+{engine}"


# --- the graph engines -----------------------------------------------------------------------------------------


def _pixels_last(backbone: Backbone) -> bool:
    """Image graphs take their pixels channels-last (batch, height, width, channels): the decoded batches arrive
    channels_last, which is then a plain view, where a (batch, channels, height, width) input needs a copy of
    every batch (0.7 ms an image on this CPU, measured)."""
    return get_modality(backbone.modality).graph_inputs_channels_last


def graph_feeds(backbone: Backbone, batch: Any) -> dict[str, np.ndarray]:
    """A model-input batch as the graph's named numpy inputs (pixels channels-last; no copy where they are)."""
    inputs = backbone.onnx_inputs(batch) if not _pixels_last(backbone) else {"pixels": batch.float().permute(0, 2, 3, 1)}
    return {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in inputs.items()}


class EmbeddingGraph(nn.Module):
    """What the exported graph computes: the named inputs -> the backbone's inference copy -> float32 embeddings."""

    def __init__(self, backbone: Backbone, net: nn.Module):
        super().__init__()
        self.net = net
        self._to_batch = backbone.onnx_batch  # a bound method, not a sub-module: no weights twice
        self._pixels_last = _pixels_last(backbone)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        if self._pixels_last:
            tensors = (tensors[0].permute(0, 3, 1, 2),)
        return self.net(self._to_batch(*tensors)).float()


def _graph_file(backbone: Backbone) -> Path:
    layout = "nhwc" if _pixels_last(backbone) else "as-given"
    key = hashlib.sha256(f"{backbone.fingerprint()}|{layout}|{installed_versions('onnx', 'onnxscript')}".encode()).hexdigest()
    return cache_root() / "engines" / "graphs" / f"{key[:32]}.onnx"


def _export(backbone: Backbone, net: nn.Module, example: dict[str, np.ndarray], file: Path) -> None:
    """The embedding graph into `file`, atomically. The TorchScript exporter first (2 s for efficientnet_lite0
    against 8 s for the dynamo one), the dynamo exporter where it fails; audio the other way round (TorchScript
    cannot trace the spectrogram front end, and failing costs as long as the dynamo export)."""
    graph = EmbeddingGraph(backbone, net).eval()
    names = list(example)
    axes = backbone.onnx_dynamic_axes()
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
    os.close(fd)
    errors = []
    try:
        for dynamo in ((False, True) if get_modality(backbone.modality).torchscript_exports else (True, False)):
            if dynamo:
                dims = {a: torch.export.Dim(a) for ax in axes.values() for a in ax.values()}
                shapes = {"dynamic_shapes": (tuple({i: dims[a] for i, a in axes.get(n, {}).items()} for n in names),)}
            else:
                shapes = {"dynamic_axes": {**axes, "embeddings": {0: "batch"}}}
            try:
                with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    torch.onnx.export(graph, tuple(torch.from_numpy(v) for v in example.values()), tmp, input_names=names,
                                      output_names=["embeddings"], opset_version=OPSET, dynamo=dynamo,
                                      external_data=False, **shapes)
                os.replace(tmp, file)
                return
            except Exception as e:
                errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {str(e)[:120]}")
        raise EngineUnavailable(f"the backbone cannot be exported to ONNX ({'; '.join(errors)})")
    finally:
        Path(tmp).unlink(missing_ok=True)


def _keep_forked_children_from_finalizing_sessions() -> None:
    """In a process forked after a session was made (a DataLoader worker), never run the garbage collector over what
    it inherited. A session's thread pool lives only in the parent: a worker that collected an unreachable session
    hung for good in its destructor (ONNX Runtime's pthread_cond_destroy, seen in the suite under
    test_extraction_engines). gc.freeze moves the inherited objects out of the collector's reach; what the child
    allocates later is collected as usual. Registered once per process."""
    import gc

    global _FORK_HOOK_REGISTERED
    if not _FORK_HOOK_REGISTERED:
        os.register_at_fork(after_in_child=gc.freeze)
        _FORK_HOOK_REGISTERED = True


_FORK_HOOK_REGISTERED = False


def _session(engine: str, file: Path, computes: str) -> Any:
    """A function from named numpy inputs to the embeddings, on this process's PyTorch thread count."""
    _keep_forked_children_from_finalizing_sessions()
    threads = torch.get_num_threads()
    if engine == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineUnavailable("onnxruntime is not installed (pip install 'headstart[serve]')") from None
        session = ort.InferenceSession(str(file), session_options(ort, threads), providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(["embeddings"], feeds)[0]
    try:
        import openvino as ov
    except ImportError:
        raise EngineUnavailable("openvino is not installed (pip install 'headstart[openvino]')") from None
    # One stream using every thread: the pass runs one large batch at a time.
    compiled = ov.Core().compile_model(str(file), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "bf16" if computes == "bf16" else "f32"})
    request, output = compiled.create_infer_request(), compiled.output(0)
    return lambda feeds: np.asarray(request.infer(feeds)[output])


def _relative_difference(got: np.ndarray, reference: np.ndarray) -> float:
    """Mean over rows of |got - reference| / |reference| (Euclidean norms)."""
    norms = np.maximum(np.linalg.norm(reference, axis=1), 1e-12)
    return float(np.mean(np.linalg.norm(got - reference, axis=1) / norms))


class GraphEmbedder:
    """Called like the PyTorch inference copy (a model-input batch -> embeddings), computed by a graph engine.

    Built from a few decoded items (`example`): export (or reuse the cached graph), load, check against PyTorch.
    Should the engine fail on a later batch, it warns once and PyTorch computes from then on."""

    def __init__(self, backbone: Backbone, engine: str, precision: str, example: Any):
        self.backbone, self.engine = backbone, engine
        self.computes = graph_precision(engine, precision)
        self._fallback: nn.Module | None = None
        net = backbone.inference_copy(torch.device("cpu"), fold=True)
        example = _two_rows(backbone, example)
        file = _graph_file(backbone)
        fresh = not file.is_file()
        if fresh:
            _export(backbone, net, graph_feeds(backbone, example), file)
        try:
            self.run_graph = _session(engine, file, self.computes)
            self.parity = check_parity(self, net, example, precision)
        except EngineUnavailable:
            raise
        except Exception as e:
            if not fresh:  # a cached graph that does not load or match: drop it, so the next run exports again
                file.unlink(missing_ok=True)
            raise EngineUnavailable(f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}") from None

    def __call__(self, batch: Any) -> torch.Tensor:
        if self._fallback is None:
            try:
                return torch.from_numpy(np.asarray(self.run_graph(graph_feeds(self.backbone, batch)), dtype=np.float32))
            except Exception as e:  # an engine is only a speed-up: finish the pass with PyTorch
                log.warning("extraction engine %s failed on a batch (%s: %s): PyTorch computes the rest", self.engine,
                            type(e).__name__, (str(e).strip().splitlines() or [""])[0][:120])
                self._fallback = self.backbone.inference_copy(torch.device("cpu"), fold=True)
        with torch.inference_mode():
            return self._fallback(batch).float()


def _two_rows(backbone: Backbone, example: Any) -> Any:
    """`example` (a model-input batch) with at least 2 rows, so that no exporter fixes the batch axis to 1."""
    inputs = {k: v.detach().cpu() for k, v in backbone.onnx_inputs(example).items()}
    if next(iter(inputs.values())).shape[0] < 2:
        inputs = {k: torch.cat([v, v]) for k, v in inputs.items()}
    return backbone.onnx_batch(*inputs.values())


@torch.inference_mode()
def check_parity(embedder: GraphEmbedder, net: nn.Module, batch: Any, precision: str) -> dict:
    """The engine's embeddings of `batch` against PyTorch fp32's; raises EngineUnavailable beyond the tolerance."""
    reference = net(batch).float().numpy()
    got = np.asarray(embedder.run_graph(graph_feeds(embedder.backbone, batch)), dtype=np.float32)
    difference = _relative_difference(got, reference)
    allowed = FP32_TOLERANCE
    if embedder.computes == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch_bf16 = net(batch).float().numpy()
        allowed = max(FP32_TOLERANCE, REDUCED_FACTOR * _relative_difference(torch_bf16, reference))
    result = {"items": len(reference), "mean_rel_diff": difference, "allowed": allowed, "computes": embedder.computes}
    if not difference <= allowed:
        raise EngineUnavailable(f"its embeddings differ from PyTorch fp32 by {difference:.2g} (allowed {allowed:.2g})")
    return result


# --- building and choosing ---------------------------------------------------------------------------------------


def decoded_batch(backbone: Backbone, items: Sequence) -> Any:
    """`items` decoded into one model-input batch, in this process."""
    for batch, _, _ in get_modality(backbone.modality).extraction_batches(backbone, list(items), max(len(items), 1)):
        return batch
    raise EngineUnavailable("no items to build the engine with")


def build_engine(backbone: Backbone, engine: str, precision: str, example: Any) -> GraphEmbedder:
    """A checked graph engine for `backbone`; EngineUnavailable (with the reason) where it cannot be."""
    if engine not in ("onnx", "openvino"):
        raise ValueError(f"not a graph engine: {engine}")
    try:
        return GraphEmbedder(backbone, engine, precision, example)
    except EngineUnavailable:
        raise
    except Exception as e:  # anything unexpected in a speed-up is a reason to skip it, not to fail the fit
        raise EngineUnavailable(f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}") from None


def extraction_model(backbone: Backbone, device: torch.device, items: Sequence, precision: str,
                     fold: bool) -> nn.Module | GraphEmbedder:
    """What computes `items`' embeddings: the current engine (`using_engine`) for this backbone, built once per
    block and checked, or PyTorch's inference copy (also where the engine cannot be built: warned once)."""
    choice = current_engine()
    if choice.engine == "torch" or device.type != "cpu" or not len(items):
        return backbone.inference_copy(device, fold=fold)
    key = (id(backbone), backbone.fingerprint(), choice.engine, precision)
    if key not in choice._built:
        try:
            choice._built[key] = build_engine(backbone, choice.engine, precision,
                                              decoded_batch(backbone, items[:CHECK_ITEMS]))
        except EngineUnavailable as e:
            log.warning("extraction engine %s skipped (%s): PyTorch computes the embeddings", choice.engine, e)
            choice.skipped[choice.engine] = str(e)
            choice._built[key] = None
    return choice._built[key] or backbone.inference_copy(device, fold=fold)


def cpu_identity() -> str:
    """What the measured choice depends on besides the backbone: the CPU model, its matrix features, the threads."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    features = sorted(f for f in cpu_flags() if f.startswith(("amx", "avx512_bf16", "avx512f", "avx2")))
    return f"{model}|{','.join(features)}|threads={torch.get_num_threads()}"


def _choices_file() -> Path:
    """Where `auto`'s measured choices are kept, one entry per backbone, CPU and precision."""
    return cache_root() / "engines" / CHOICES_FILE


def _choice_key(backbone: Backbone, precision: str) -> str:
    return hashlib.sha256(f"{backbone.fingerprint()}|{cpu_identity()}|{precision}".encode()).hexdigest()[:32]


def _read_choices() -> dict[str, Any]:
    import json

    try:
        choices = json.loads(_choices_file().read_text())
        return choices if isinstance(choices, dict) else {}
    except (OSError, ValueError):
        return {}


def _time_engine(run: Any, batch: Any) -> float:
    """Items per second of `run` on `batch`: the best of two calls after a warm-up call."""
    run(batch)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        run(batch)
        best = min(best, time.perf_counter() - started)
    return len(next(iter(batch.values())) if isinstance(batch, dict) else batch) / max(best, 1e-9)


def measure_engines(backbone: Backbone, items: Sequence, precision: str,
                    engines: Sequence[str] = ENGINES) -> tuple[dict[str, float], dict[str, str]]:
    """(items per second of each engine that works, reasons of those skipped), on TIMING_ITEMS decoded items."""
    batch = decoded_batch(backbone, items[:TIMING_ITEMS])
    rates: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for engine in engines:
        try:
            if engine == "torch":
                net = backbone.inference_copy(torch.device("cpu"), fold=True)
                dtype = precision_dtype(precision, torch.device("cpu"))

                def run(b, net=net, dtype=dtype):
                    with torch.inference_mode(), (torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()):
                        return net(b).float()
            else:
                run = build_engine(backbone, engine, precision, batch)
            rates[engine] = round(_time_engine(run, batch), 1)
        except Exception as e:  # skipped, counted and said; never a failed fit
            skipped[engine] = str(e) if isinstance(e, EngineUnavailable) else f"{type(e).__name__}: {str(e)[:160]}"
            log.warning("extraction engine %s skipped (%s)", engine, skipped[engine])
    if skipped:
        log.warning("%d of %d extraction engines skipped for %s", len(skipped), len(engines), type(backbone).__name__)
    return rates, skipped


def choose_engine(backbone: Backbone, requested: str, precision: str, items: Sequence,
                  device: torch.device | None = None, n_items: int | None = None) -> EngineChoice:
    """The engine for an embedding pass over `n_items` items (default: all of `items`, whose first ones `auto`
    measures on): `requested` as given, or for `auto` the fastest measured for this backbone on this CPU at this
    precision (measured once, then read from the user cache)."""
    check_engine(requested)
    device = device or torch.device("cpu")
    if requested != "auto":
        if requested != "torch" and device.type != "cpu":
            log.warning("--engine %s runs on the CPU only: PyTorch computes on the %s", requested, device.type)
            return EngineChoice(requested, "torch", "a GPU", precision)
        return EngineChoice(requested, requested, "given", precision)
    if device.type != "cpu":
        return EngineChoice("auto", "torch", "a GPU", precision)
    if distributed.world_size() > 1:  # ranks must agree on the engine: they share one embedding cache key
        return EngineChoice("auto", "torch", "several processes", precision)
    if (len(items) if n_items is None else n_items) < AUTO_MIN_ITEMS:
        return EngineChoice("auto", "torch", f"fewer than {AUTO_MIN_ITEMS} items", precision)
    key = _choice_key(backbone, precision)
    known = _read_choices().get(key)
    if isinstance(known, dict) and known.get("engine") in ENGINES:
        return EngineChoice("auto", known["engine"], "cached measurement", precision, dict(known.get("rates", {})),
                            dict(known.get("skipped", {})))
    try:
        rates, skipped = measure_engines(backbone, items, precision)
    except Exception as e:  # e.g. the items cannot be decoded: their own errors come from the embedding pass
        log.warning("extraction engines not measured (%s: %s): PyTorch computes", type(e).__name__, str(e)[:120])
        return EngineChoice("auto", "torch", "not measured", precision)
    engine = max(rates, key=rates.__getitem__) if rates else "torch"
    choices = _read_choices()  # read again: another process may have added its own meanwhile
    choices[key] = {"engine": engine, "rates": rates, "skipped": skipped, "backbone": type(backbone).__name__,
                    "cpu": cpu_identity(), "precision": precision,
                    "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        atomic_write_json(_choices_file(), choices)
    except OSError as e:  # the choice only saves time next run
        log.warning("cannot keep the engine choice in %s (%s)", _choices_file(), e.strerror or type(e).__name__)
    log.info("extraction engine: %s (measured, items/s: %s)", engine, ", ".join(f"{k} {v:g}" for k, v in rates.items()))
    return EngineChoice("auto", engine, "measured", precision, rates, skipped)
