"""What POST /predict takes besides JSON lists and multipart files: one string (as the Hugging Face inference API
does) and one raw image/* or audio/* body; and the access log, one line per request, off with --no-access-log.

Stand-in predictors with the real codecs keep these fast: what is checked is the HTTP layer."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from headstart.runtime.audio_codec import load_audio
from headstart.runtime.codecs import get_codec
from headstart.runtime.image_codec import read_image
from headstart.serving.app import Limits, create_app


class _TextLength:
    """Texts: 'long' the longer they are."""

    def __init__(self):
        self.classes = ["short", "long"]
        self.task_name, self.task_params = "classification", {}

    def scores(self, items):
        p = np.array([min(len(t), 20) / 20 for t in items], dtype=np.float32)
        return np.stack([1 - p, p], 1), []


class _Brightness:
    """Images (decoded arrays) or recordings (clips): 'bright' the larger their mean magnitude."""

    def __init__(self):
        self.classes = ["dark", "bright"]
        self.task_name, self.task_params = "classification", {}

    def scores(self, items):
        p = []
        for item in items:
            values = np.asarray(read_image(item), np.float32) / 255 if isinstance(item, np.ndarray) \
                else np.abs(load_audio(item, None))
            p.append(float(values.mean()))
        p = np.clip(np.array(p, dtype=np.float32), 0, 1)
        return np.stack([1 - p, p], 1), []


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _wav(amplitude: float) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, (amplitude * np.sin(np.arange(8000) / 5)).astype(np.float32), 8000, format="WAV")
    return buffer.getvalue()


def _client(modality: str, tmp_path, access_log: bool = True) -> TestClient:
    preprocessing = {"image": {"image_size": 24}, "audio": {"sample_rate": 8000, "min_samples": 100}}.get(modality, {})
    codec = get_codec(modality)(preprocessing, tmp_path)
    predictor = _TextLength() if modality == "text" else _Brightness()
    app = create_app(predictor, codec, {"modality": modality}, max_wait_ms=0, access_log=access_log)
    return TestClient(app, raise_server_exceptions=True)


def test_one_string_is_one_input(tmp_path):
    with _client("text", tmp_path) as client:
        one = client.post("/predict", json={"inputs": "a rather long sentence here"})
        listed = client.post("/predict", json={"inputs": ["a rather long sentence here"]})
        assert one.status_code == 200 and one.json() == listed.json()
        assert one.json()["predictions"][0]["label"] == "long"
        assert client.post("/predict", json={"inputs": 3}).status_code == 422
        assert client.post("/predict", json={"inputs": ""}).json()["predictions"][0]["label"] == "short"


def test_a_raw_image_body_is_one_image_predicted_as_its_upload_is(tmp_path):
    with _client("image", tmp_path) as client:
        white, black = _png((250, 250, 250)), _png((5, 5, 5))
        raw = client.post("/predict", content=white, headers={"content-type": "image/png"})
        assert raw.status_code == 200, raw.text
        upload = client.post("/predict", files=[("files", ("w.png", white, "image/png"))])
        assert raw.json() == upload.json() and raw.json()["predictions"][0]["label"] == "bright"
        dark = client.post("/predict", content=black, headers={"content-type": "image/x-anything"})
        assert dark.json()["predictions"][0]["label"] == "dark"
        bad = client.post("/predict", content=b"not an image at all", headers={"content-type": "image/jpeg"})
        assert bad.status_code == 400 and "the image/jpeg body cannot be decoded as an image" in bad.json()["error"]
        assert client.post("/predict", content=b"", headers={"content-type": "image/png"}).status_code == 400
        wrong = client.post("/predict", content=_wav(0.5), headers={"content-type": "audio/wav"})
        assert wrong.status_code == 415 and "image/*" in wrong.json()["error"]
        assert "image/*" in client.get("/metadata").json()["accepts"]


def test_a_raw_audio_body_is_one_recording(tmp_path):
    with _client("audio", tmp_path) as client:
        loud = client.post("/predict", content=_wav(0.9), headers={"content-type": "audio/wav"})
        assert loud.status_code == 200, loud.text
        assert loud.json() == client.post("/predict", files=[("files", ("a.wav", _wav(0.9), "audio/wav"))]).json()
        quiet = client.post("/predict", content=_wav(0.01), headers={"content-type": "audio/x-wav"})
        assert [r.json()["predictions"][0]["label"] for r in (loud, quiet)] == ["bright", "dark"]
        bad = client.post("/predict", content=b"RIFF but not really", headers={"content-type": "audio/wav"})
        assert bad.status_code == 400 and "cannot be decoded as audio" in bad.json()["error"]
    with _client("text", tmp_path) as client:  # a text model takes no raw bodies
        assert client.post("/predict", content=_png((1, 2, 3)), headers={"content-type": "image/png"}).status_code == 415


def _access_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "headstart.access"]


def test_the_access_log_has_one_line_per_request(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="headstart.access")
    with _client("text", tmp_path) as client:
        client.post("/predict", json={"inputs": ["one", "two", "three"]})
        client.get("/health")
        client.post("/predict", json={"inputs": ["fine", 42]})
        client.post("/predict", content=b"x", headers={"content-type": "text/plain"})
    lines = _access_lines(caplog)
    assert [(r.method, r.path, r.status, r.items) for r in lines] == [
        ("POST", "/predict", 200, 3), ("GET", "/health", 200, 0), ("POST", "/predict", 422, 0),
        ("POST", "/predict", 415, 0)]
    assert all(r.ms >= 0 for r in lines)
    assert lines[0].getMessage() == f"POST /predict 200 3 items {lines[0].ms:.1f} ms"


def test_no_access_log_means_no_lines(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="headstart.access")
    with _client("text", tmp_path, access_log=False) as client:
        assert client.post("/predict", json={"inputs": "x"}).status_code == 200
        assert client.get("/health").status_code == 200
    assert _access_lines(caplog) == []


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-access-log"], False)])
def test_serve_passes_the_access_log_option(flag, expected, tmp_path, monkeypatch):
    import headstart.serving
    from headstart.cli import app

    seen = {}
    monkeypatch.setattr(headstart.serving, "serve", lambda *args, **kwargs: seen.update(kwargs))
    result = CliRunner().invoke(app, ["serve", str(tmp_path), *flag])
    assert result.exit_code == 0, result.output
    assert seen["access_log"] is expected


def test_a_raw_body_counts_against_the_decoded_size_of_a_request(tmp_path):
    codec = get_codec("image")({"image_size": 24}, tmp_path)
    limits = Limits(max_decoded_mb=0.001)  # about 1 kB: a 24x24 RGB image decodes to 1.7 kB
    app = create_app(_Brightness(), codec, {"modality": "image"}, max_wait_ms=0, limits=limits)
    with TestClient(app, raise_server_exceptions=True) as client:
        raw = client.post("/predict", content=_png("white"), headers={"content-type": "image/png"})
        multipart = client.post("/predict", files=[("files", ("w.png", _png("white"), "image/png"))])
    assert raw.status_code == multipart.status_code == 413
    assert "--max-decoded-mb" in raw.json()["error"]


def test_the_access_log_writes_the_path_as_sent_so_a_newline_cannot_forge_a_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="headstart.access")
    with _client("text", tmp_path) as client:
        client.get("/health%0AGET%20/fake%20200")
    (line,) = _access_lines(caplog)
    assert "\n" not in line.getMessage() and line.path == "/health%0AGET%20/fake%20200"
