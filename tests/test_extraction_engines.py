"""Extraction engines (headstart.extraction_engines): parity with PyTorch, the automatic choice kept and recorded,
and engines that fail or are missing skipped with a warning instead of failing the fit."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import headstart
from headstart import extraction_engines as engines
from headstart._util import resolve_precision
from headstart.backbones import resolve_backbone
from headstart.data.builtins import cache_root
from headstart.embeddings import compute_embeddings
from headstart.errors import SettingsError
from headstart.extraction_engines import EngineChoice, using_engine

from .conftest import make_audio_folder, make_image_folder, make_tiny_bert, write_text_table

CPU = torch.device("cpu")
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def _relative(got: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(got - reference, axis=1) / np.linalg.norm(reference, axis=1)))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("engine-images") / "images", per_class=6, size=20)
    return sorted(root.rglob("*.png"))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return resolve_backbone("smallcnn", pretrained=False)


def _embed(backbone, items, engine: str, precision: str = "fp32") -> np.ndarray:
    with using_engine(EngineChoice(engine, engine, "given", precision)) as choice:
        out, failures = compute_embeddings(backbone, items, batch_size=8, precision=precision, device=CPU)
    assert not failures and not choice.skipped, choice.skipped
    return out


@pytest.mark.parametrize("engine", ["onnx", pytest.param("openvino", marks=pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino is not installed (pip install 'headstart[openvino]')"))])
def test_graph_engines_compute_the_pytorch_embeddings_of_images(engine, cnn, images):
    reference = _embed(cnn, images, "torch")
    got = _embed(cnn, images, engine)
    assert got.shape == reference.shape
    assert _relative(got, reference) <= engines.FP32_TOLERANCE


def test_onnx_engine_computes_the_pytorch_embeddings_of_sounds(tmp_path):
    torch.manual_seed(0)
    sound = resolve_backbone("smallcnn", pretrained=False, modality="audio")
    clips = sorted(make_audio_folder(tmp_path / "audio", per_class=2).rglob("*.wav"))
    assert _relative(_embed(sound, clips, "onnx"), _embed(sound, clips, "torch")) <= engines.FP32_TOLERANCE


def test_an_engine_that_fails_is_skipped_with_a_warning_and_pytorch_computes(cnn, images, monkeypatch, caplog):
    def broken(*_):
        raise RuntimeError("no kernel for this")

    monkeypatch.setattr(engines, "_session", broken)
    with caplog.at_level(logging.WARNING, logger="headstart"):
        with using_engine(EngineChoice("onnx", "onnx", "given", "fp32")) as choice:
            got, _ = compute_embeddings(cnn, images, batch_size=8, precision="fp32", device=CPU)
        rates, skipped = engines.measure_engines(cnn, images, "fp32", ("torch", "onnx"))
    assert "no kernel for this" in choice.skipped["onnx"]
    np.testing.assert_allclose(got, _embed(cnn, images, "torch"), rtol=1e-5, atol=1e-6)
    assert set(skipped) == {"onnx"} and set(rates) == {"torch"}
    assert "1 of 2 extraction engines skipped" in caplog.text


def test_openvino_missing_is_skipped_with_the_reason(cnn, images, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(engines.EngineUnavailable, match="openvino is not installed"):
        engines.build_engine(cnn, "openvino", "fp32", engines.decoded_batch(cnn, images[:4]))


def test_a_graph_engine_beyond_the_tolerance_is_refused(cnn, images, monkeypatch):
    real = engines._session

    def off_by_one_percent(engine, file, computes):
        run = real(engine, file, computes)
        return lambda feeds: run(feeds) * 1.01

    monkeypatch.setattr(engines, "_session", off_by_one_percent)
    with pytest.raises(engines.EngineUnavailable, match="differ from PyTorch fp32"):
        engines.build_engine(cnn, "onnx", "fp32", engines.decoded_batch(cnn, images[:4]))


def test_the_cache_key_separates_numerics_that_differ():
    assert engines.cache_precision("torch", "auto") == "auto"  # PyTorch's key is unchanged
    assert engines.cache_precision("onnx", "auto") == "fp32"  # ONNX Runtime computes fp32: PyTorch fp32's rows
    assert engines.cache_precision("openvino", "fp32") == "fp32"
    with pytest.raises(SettingsError, match="--engine"):
        engines.check_engine("tensorrt")


def test_auto_measures_once_keeps_the_choice_and_the_manifest_records_it_and_texts_match(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "AUTO_MIN_ITEMS", 10)
    monkeypatch.setattr(engines.measure_engines, "__defaults__", (("torch", "onnx"),))  # two engines: short
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=15)
    bert = make_tiny_bert(tmp_path / "bert")
    model = headstart.fit(table, str(bert), "probe", max_length=32, cache=False, calibrate=False)
    record = model.manifest.extraction_engine
    assert record["requested"] == "auto" and record["how"] == "measured"
    assert record["engine"] in ("torch", "onnx") and set(record["rates_per_s"]) == {"torch", "onnx"}
    kept = json.loads((cache_root() / "engines" / engines.CHOICES_FILE).read_text())
    assert [c["engine"] for c in kept.values()] == [record["engine"]]
    texts = pd.read_csv(table)["text"].tolist()
    again = engines.choose_engine(model.backbone, "auto", "auto", texts)  # the same backbone, CPU and precision
    assert (again.how, again.engine) == ("cached measurement", record["engine"])
    assert engines.choose_engine(model.backbone, "auto", "fp32", texts).how == "measured"  # another precision
    given = engines.choose_engine(model.backbone, "torch", "auto", texts)
    assert given.record() == {"requested": "torch", "engine": "torch", "how": "given",
                              "computes": resolve_precision("auto", torch.device("cpu"))}
    assert engines.choose_engine(model.backbone, "auto", "auto", texts[:5]).engine == "torch"  # too few items
    # texts: the ONNX engine (its graph exported by the measurement) computes PyTorch's embeddings
    assert _relative(_embed(model.backbone, texts, "onnx"), _embed(model.backbone, texts, "torch")) <= engines.FP32_TOLERANCE
