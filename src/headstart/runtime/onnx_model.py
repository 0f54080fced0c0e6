"""An exported classifier run by ONNX Runtime or OpenVINO: the deployment twin of `TrainedModel`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ArtifactError, DataError, HeadstartError
from .codecs import get_codec
from .sidecar import OnnxManifest, read_sidecar, sidecar_path
from .token_windows import word_scores

GRAPH = "model.onnx"
INT8_GRAPH = "model.int8.onnx"
BATCH_SIZE = 32
PREPARE_BATCHES = 16  # batches of items prepared (decoded) ahead, sorted together to batch similar lengths


def _dimension(value: Any) -> int | None:
    """A graph dimension as a number, None where it is dynamic (a name such as 'batch', or unknown)."""
    return value if isinstance(value, int) and value >= 0 else None


class Engine(Protocol):
    name: str
    inputs: dict[str, list[int | None]]  # the graph's input names and shapes (None: a dynamic axis)
    output_shape: list[int | None]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


def session_options(ort: Any, threads: int | None = None) -> Any:
    """ONNX Runtime's session options for this machine: all graph optimisations; nodes run one after another
    (sequential execution, one inter-op thread: a transformer's graph is a chain, and a second pool only competes
    for the cores); `threads` intra-op threads (default: ONNX Runtime's, one per physical core). Idle worker
    threads sleep instead of spinning: a server's event loop, its image decoding and the client share the cores,
    and spinning threads take time from them for no gain (measured in RESULTS.md; HEADSTART_ORT_SPIN=1 spins).
    The int8 kernels (AMX, AVX512-VNNI, AVX-VNNI, AVX2) are ONNX Runtime's choice from the CPU's flags at run time;
    `int8_kernels` names the one this CPU gets."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    if os.environ.get("HEADSTART_ORT_SPIN", "0") != "1":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


# CPU flags (/proc/cpuinfo) -> the int8 matrix kernels ONNX Runtime's MLAS runs with them, fastest first.
INT8_KERNELS = (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
                ("avx512bw", "AVX512"), ("avx2", "AVX2"))


def int8_kernels(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The int8 kernels this CPU gives ONNX Runtime ("AMX", "AVX512-VNNI" ...; "unknown" off Linux x86): shown by
    the server's /metadata, since an int8 graph is 2-4x faster than fp32 with VNNI or AMX and barely without."""
    try:
        with open(cpuinfo) as f:
            flags = set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return "unknown"
    return next((name for flag, name in INT8_KERNELS if flag in flags), "unknown")


class OnnxRuntimeEngine:
    """ONNX Runtime on the CPU, all graph optimisations on."""

    name = "onnxruntime"

    def __init__(self, graph: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise HeadstartError("onnxruntime is not installed: pip install 'headstart[serve]'") from None
        try:
            self.session = ort.InferenceSession(str(graph), session_options(ort, threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ArtifactError(f"{graph} cannot be loaded by ONNX Runtime ({str(e).splitlines()[0][:200]}); "
                                "export again") from None
        self.output = self.session.get_outputs()[0].name
        self.inputs = {i.name: [_dimension(d) for d in i.shape] for i in self.session.get_inputs()}
        self.output_shape = [_dimension(d) for d in self.session.get_outputs()[0].shape]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output], feeds)[0]


class OpenVinoEngine:
    """OpenVINO on the CPU, compiled for latency, from the same ONNX file."""

    name = "openvino"

    def __init__(self, graph: Path, threads: int | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise HeadstartError("openvino is not installed: pip install openvino") from None
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = ov.Core().compile_model(str(graph), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with a C++ trace for a damaged file
            raise ArtifactError(f"{graph} cannot be loaded by OpenVINO ({(str(e).strip().splitlines() or [''])[0][:200]}"
                                "); export again") from None
        self.request = self.compiled.create_infer_request()
        self.inputs = {p.get_any_name(): self._shape(p) for p in self.compiled.inputs}
        self.output_shape = self._shape(self.compiled.output(0))

    @staticmethod
    def _shape(port: Any) -> list[int | None]:
        shape = port.get_partial_shape()
        return [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.request.infer(feeds)[self.compiled.output(0)])


ENGINES: dict[str, type] = {"onnxruntime": OnnxRuntimeEngine, "openvino": OpenVinoEngine}


def find_graph(path: str | Path, int8: bool = False) -> Path:
    """The graph file: `path` itself if it is a .onnx file, else RUN/model/model.onnx (model.int8.onnx)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    graph = path / (INT8_GRAPH if int8 else GRAPH)
    if not graph.is_file():
        how = "headstart export " + str(path) + (" --quantize int8" if int8 else "")
        raise ArtifactError(f"{graph} not found: export the model first (`{how}`)")
    return graph


class OnnxClassifier:
    """Class probabilities from an exported graph; the same `scores`/`predict_proba`/`predict` as TrainedModel."""

    def __init__(self, graph: Path, manifest: OnnxManifest, engine: str = "onnxruntime", threads: int | None = None):
        if engine not in ENGINES:
            raise HeadstartError(f"unknown ONNX engine '{engine}' (known: {', '.join(ENGINES)})")
        self.graph = graph
        self.manifest = manifest
        self.classes = list(manifest.classes)
        self.modality = manifest.modality
        self.codec = get_codec(manifest.modality)(manifest.preprocessing, graph.parent)
        self.engine = ENGINES[engine](graph, threads)
        try:  # a description that does not fit the graph fails at load, not as an error on every item
            self._check_description()
        except ArtifactError as e:
            raise ArtifactError(f"{sidecar_path(graph)}: {e}; export again") from None
        self.codec.check_files()  # a missing tokenizer fails at load, not at the first request

    def _check_description(self) -> None:
        """The sidecar against the graph: the modality's inputs, the number of classes, the preprocessing."""
        graph_inputs = self.engine.inputs
        expected = self.codec.input_names()
        if expected is not None and sorted(expected) != sorted(graph_inputs):
            raise ArtifactError(f"it describes a model of {self.modality} inputs (graph inputs {', '.join(expected)}), "
                                f"but {self.graph.name} takes {', '.join(graph_inputs)}: the description belongs to "
                                "another graph")
        outputs = self.engine.output_shape[-1] if self.engine.output_shape else None
        if outputs is not None and outputs != len(self.classes):
            raise ArtifactError(f"it names {len(self.classes)} classes but {self.graph.name} predicts {outputs}: the "
                                "description belongs to another graph")
        self.codec.check_preprocessing()
        self.codec.check_graph(graph_inputs)

    @property
    def task_name(self) -> str:
        return self.manifest.task

    @property
    def task_params(self) -> dict[str, Any]:
        return self.manifest.task_params

    @property
    def runtime(self) -> str:
        return f"{self.engine.name} ({self.manifest.precision})"

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.metrics

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.graph}, engine={self.engine.name}, classes={len(self.classes)})"

    def run_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        """Probabilities of already prepared items, one graph call."""
        return self.engine.run(self.codec.feeds(prepared)).astype(np.float32, copy=False)

    def scores(self, items: Sequence, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Class probabilities per item (NaN rows for unreadable items) and the (index, reason) failures; a task
        that scores items itself (ITEM_SCORERS: token tagging) does so instead.

        Items are prepared PREPARE_BATCHES batches at a time (not all at once: a folder of recordings would sit
        in memory whole) and run in the codec's batches over that stretch (sorted by its key; text: in length
        buckets); each row lands at its item's index, whatever order the batches ran in."""
        items = _positional(items)
        if self.task_name in ITEM_SCORERS:
            return ITEM_SCORERS[self.task_name](self, items, batch_size)
        probs = np.full((len(items), len(self.classes)), np.nan, dtype=np.float32)
        failures: list[tuple[int, str]] = []
        stretch = PREPARE_BATCHES * batch_size
        for first in range(0, len(items), stretch):
            prepared: list[tuple[int, Any]] = []
            for i in range(first, min(first + stretch, len(items))):
                try:
                    prepared.append((i, self.codec.prepare(items[i])))
                except Exception as e:  # an unreadable item is reported, never a crash of the whole call
                    failures.append((i, f"{type(e).__name__}: {e}"))
            for rows, feeds in self.codec.batches([x for _, x in prepared], batch_size):
                probs[[prepared[r][0] for r in rows]] = self.engine.run(feeds)
        return probs, failures

    def predict_proba(self, items: Sequence) -> np.ndarray:
        items = _positional(items)
        probs, failures = self.scores(items)
        if failures:
            i, reason = failures[0]
            raise DataError(f"{len(failures)} unreadable input(s), e.g. {items[i]} ({reason})")
        return probs

    def predict(self, items: Sequence) -> list[Any]:
        """The prediction of each item, as `TrainedModel.predict` gives it (a class; a list of labels; {target:
        value})."""
        from .records import prediction_record

        records = [prediction_record(row, self.classes, 1, self.task_name, self.task_params)
                   for row in self.predict_proba(items)]
        return [r["label"] if "label" in r else r["values"] if "values" in r else r["entities"] if "entities" in r
                else [c for c in self.classes if c in r["labels"]]  # in class order, as TrainedModel.predict
                for r in records]


def word_tag_scores(predictor: OnnxClassifier, items: list, batch_size: int) -> tuple[list, list[tuple[int, str]]]:
    """Per text, its words' tag probabilities (runtime.token_windows: the same words, windows and stitching as
    the PyTorch model), `batch_size` windows per graph call; None for an item that is not a text."""
    codec, names = predictor.codec, list(predictor.engine.inputs)
    texts: list[str] = []
    readable: list[int] = []
    failures: list[tuple[int, str]] = []
    for i, item in enumerate(items):
        try:
            texts.append(codec.prepare(item))
            readable.append(i)
        except Exception as e:  # an unreadable item is reported, never a crash of the whole call
            failures.append((i, f"{type(e).__name__}: {e}"))
    preprocessing = codec.preprocessing
    found = word_scores(texts, False, codec.tokenizer, int(preprocessing["max_length"]), int(preprocessing["pad_id"]),
                        len(predictor.classes), lambda feed: predictor.engine.run({k: feed[k] for k in names}),
                        batch_size)
    scores: list = [None] * len(items)
    for i, row in zip(readable, found):
        scores[i] = row
    return scores, failures


# Per task that scores items itself rather than one row per item, how a graph's items are scored.
ITEM_SCORERS = {"tokens": word_tag_scores}


def _positional(items: Sequence) -> list:
    """The items as a list read by position: a pandas Series indexes by label (`items[0]` is the row labelled 0,
    not the first), and a DataFrame is a table, not a sequence of items."""
    if hasattr(items, "columns"):
        raise DataError("a DataFrame is not a list of items: pass its text (or path) column, e.g. df['text']")
    return list(items)


def load(path: str | Path, engine: str = "onnxruntime", int8: bool = False, threads: int | None = None
         ) -> OnnxClassifier:
    """Load an exported graph: a .onnx file, or a model folder holding model.onnx (with `int8`, model.int8.onnx).

    `threads` limits the engine's threads (default: the engine's own choice, all cores); the environment
    variable HEADSTART_THREADS sets it too."""
    graph = find_graph(path, int8)
    threads = threads or (int(os.environ["HEADSTART_THREADS"]) if os.environ.get("HEADSTART_THREADS") else None)
    return OnnxClassifier(graph, read_sidecar(graph), engine, threads)


# The names `--runtime` takes for an exported graph: engine, and "-int8" for the quantized graph.
ONNX_RUNTIMES = ("onnx", "onnx-int8", "openvino", "openvino-int8")


def load_runtime(path: str | Path, runtime: str, threads: int | None = None) -> OnnxClassifier:
    """`load` by a `--runtime` name: "onnx" (ONNX Runtime) or "openvino", "-int8" for model.int8.onnx."""
    if runtime not in ONNX_RUNTIMES:
        raise HeadstartError(f"--runtime must be one of torch, {', '.join(ONNX_RUNTIMES)}, got '{runtime}'")
    engine, _, precision = runtime.partition("-")
    return load(path, "onnxruntime" if engine == "onnx" else engine, int8=precision == "int8", threads=threads)


__all__ = ["ENGINES", "GRAPH", "INT8_GRAPH", "ONNX_RUNTIMES", "OnnxClassifier", "find_graph", "int8_kernels", "load",
           "load_runtime", "session_options", "sidecar_path"]
