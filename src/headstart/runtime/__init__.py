"""Running an exported ONNX graph without the training stack: numpy, onnxruntime (or OpenVINO), Pillow and
tokenizers, never torch.

`load(path)` gives an `OnnxClassifier` with the same `scores` / `predict_proba` / `predict` as `TrainedModel`, so
`predict` and the HTTP server run either. Input decoding for deployment lives here too (`codecs`), one codec per
modality, because the modality modules of the training side import torch.
"""

from __future__ import annotations

from .codecs import CODECS, InputCodec, get_codec, register_codec
from .onnx_model import ENGINES, ONNX_RUNTIMES, OnnxClassifier, find_graph, load, load_runtime, sidecar_path
from .records import Predictor, prediction_record, prediction_records

__all__ = ["CODECS", "ENGINES", "ONNX_RUNTIMES", "InputCodec", "OnnxClassifier", "Predictor", "find_graph", "get_codec",
           "load", "load_runtime", "prediction_record", "prediction_records", "register_codec", "sidecar_path"]
