"""int8 graphs with ONNX Runtime's quantization tools; which method is the backbone family's choice
(`Backbone.int8_method`): dynamic for transformer encoders, static (calibrated on training items) for CNNs."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import HeadstartError

log = logging.getLogger("headstart")
MAX_ACCURACY_DROP = 1.0  # points of accuracy on the test split; a larger drop is refused without --force


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over prepared batches (duck-typed: its `get_next`)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


@contextlib.contextmanager
def _working_directory(folder: Path):
    """ONNX Runtime's shape inference writes temporary files (sym_shape_infer_temp.onnx, <uuid>.data) into the
    current directory and leaves some behind: run it inside a temporary folder. (contextlib.chdir needs 3.11.)"""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _quiet_onnxruntime_logging():
    """ONNX Runtime's quantization tools log through the root logger (and may configure it): keep that out of
    headstart's output, and leave the root logger as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def quantize(fp32: Path, int8: Path, method: str, calibration: Sequence[dict[str, np.ndarray]]) -> dict[str, str]:
    """Write the int8 version of `fp32` to `int8`; returns what was done (recorded beside the graph)."""
    if method not in ("dynamic", "static"):
        raise HeadstartError(f"unknown int8 method '{method}' (dynamic or static)")
    if method == "static" and not calibration:
        raise HeadstartError("static int8 quantization needs training items to calibrate on; none could be read")
    fp32, int8 = fp32.resolve(), int8.resolve()  # the tools run in another working directory (below)
    with _quiet_onnxruntime_logging(), tempfile.TemporaryDirectory(dir=int8.parent, prefix=".quantize-") as tmp, \
            _working_directory(Path(tmp)):
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

        if method == "dynamic":
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=False)
            return {"method": "dynamic", "weights": "int8 per tensor", "activations": "uint8, ranges per batch"}
        quantize_static(str(_pre_processed(fp32, Path(tmp))), str(int8), _Calibration(calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
        return {"method": "static", "weights": "int8 per channel", "activations": "uint8, calibrated (min-max)",
                "format": "QDQ", "calibration_batches": str(len(calibration))}


def _pre_processed(fp32: Path, folder: Path) -> Path:
    """Shape inference and graph fusions before static quantization, as ONNX Runtime recommends; the graph as
    it is when that fails (it is an optimisation, not a requirement)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = folder / "prepared.onnx"
    try:
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=False)
        return out
    except Exception as e:
        log.info("quantization pre-processing skipped (%s)", e)
        return fp32
