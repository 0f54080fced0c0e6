"""The HTTP server: predictions like `predict`, dynamic batching, and a 4xx (never a 5xx) for every bad request."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import headstart
from headstart.runtime.codecs import get_codec
from headstart.serving import DynamicBatcher, Limits, build_app
from headstart.serving.app import create_app


def _png(size=(20, 20), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_text_predictions_metadata_health_and_docs(exported_text):
    graph = headstart.load(exported_text, runtime="onnx")
    texts = ["a wonderful and lovely film", "a dull and dreadful film", "dull"]
    with TestClient(build_app(exported_text, runtime="onnx")) as client:
        response = client.post("/predict", json={"inputs": texts})
        assert response.status_code == 200
        got = response.json()["predictions"]
        assert [p["label"] for p in got] == graph.predict(texts)
        assert all(set(p) == {"label", "score", "top_k"} and len(p["top_k"]) == 2 for p in got)
        meta = client.get("/metadata").json()
        assert meta["classes"] == graph.classes and meta["runtime"] == "onnxruntime (fp32)"
        assert meta["parity"]["top1_agreement"] == 1.0 and meta["accepts"] == ["application/json"]
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/docs").status_code == 200
        assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_image_uploads_with_the_torch_runtime_predict_like_the_model(exported_cnn, small_cnn_run):
    files = sorted((small_cnn_run.parent / "images").rglob("*.png"))[::60]
    model = headstart.load(exported_cnn)
    with TestClient(build_app(exported_cnn, runtime="torch")) as client:
        response = client.post("/predict", files=[("files", (f.name, f.read_bytes(), "image/png")) for f in files])
    assert response.status_code == 200
    assert [p["label"] for p in response.json()["predictions"]] == model.predict(files)


def _image_cases(limit: int) -> list[dict]:
    truncated = _jpeg()[:300]
    bomb = io.BytesIO()
    Image.new("L", (1, 1)).save(bomb, "PNG")
    huge = bytearray(bomb.getvalue())
    huge[16:24] = (100_000).to_bytes(4, "big") * 2  # the header claims 100,000 x 100,000 pixels
    return [
        {"files": [("files", ("cut.jpg", truncated, "image/jpeg"))]},  # truncated JPEG
        {"files": [("files", ("notes.jpg", b"just some text, not an image", "image/jpeg"))]},  # text file as image
        {"files": [("files", ("empty.png", b"", "image/png"))]},  # zero-byte file
        {"files": [("files", ("bomb.png", bytes(huge), "image/png"))]},  # absurd dimensions
        {"files": [("files", ("a.png", _png(), "image/png"))] * (limit + 1)},  # too many items
        {"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}},  # empty body
        {"content": b"--x\r\nnot a real part", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        {"content": b"garbage", "headers": {"content-type": "multipart/form-data"}},  # no boundary
        {"data": {"files": "a text field, not a file"}, "files": [("other", ("a.png", _png(), "image/png"))]},
        {"json": {"inputs": ["an image model given text"]}},  # wrong content type for this model
        {"content": b"\x89PNG", "headers": {"content-type": "image/png"}},  # a raw body that is no whole image
        {"content": b"x" * (3 * 1024 * 1024), "headers": {"content-type": "multipart/form-data; boundary=x"}},  # too large
    ]


def _text_cases(limit: int) -> list[dict]:
    as_json = {"headers": {"content-type": "application/json"}}
    return [
        {"content": b'{"inputs": ["unclosed', **as_json},  # bad JSON
        {"content": b"\xff\xfe\x00bad utf-8", **as_json},  # not UTF-8
        {"json": ["a list, not an object"]},
        {"json": {"texts": ["wrong key"]}},
        {"json": {"inputs": {"text": "an object, not a list or a string"}}},
        {"json": {"inputs": []}},
        {"json": {"inputs": ["fine", 42]}},  # wrong item type
        {"json": {"inputs": ["fine", None, {"a": 1}]}},
        {"json": {"inputs": ["x" * 200_000]}},  # one absurdly long text (within the body limit)
        {"json": {"inputs": ["item"] * 10_000}},  # 10,000 items
        {"content": json.dumps({"inputs": ["y" * (10 * 1024 * 1024)]}).encode(), **as_json},  # 10 MB of text
        {"content": b"", **as_json},  # empty body
        {"content": b"inputs=a", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        {"files": [("files", ("a.txt", b"text as a file", "text/plain"))]},  # multipart to a text model
        {"content": b"just text", "headers": {"content-type": "text/plain"}},
    ]


@pytest.mark.parametrize("fixture, cases", [("exported_cnn", _image_cases), ("exported_text", _text_cases)])
def test_a_thousand_malformed_requests_get_4xx_and_the_server_stays_up(fixture, cases, request):
    model_dir = request.getfixturevalue(fixture)
    limits = Limits(max_body_bytes=2 * 1024 * 1024 if fixture == "exported_cnn" else 8 * 1024 * 1024, max_items=16)
    kinds = cases(limits.max_items)
    assert len(kinds) >= 10
    statuses: dict[int, set[int]] = {}
    # raise_server_exceptions: an unhandled error (a 500) fails the test at once
    with TestClient(build_app(model_dir, runtime="onnx", limits=limits), raise_server_exceptions=True) as client:
        for n in range(1000 // len(kinds) + 1):
            for k, case in enumerate(kinds):
                if n > 2 and k in (len(kinds) - 1, 10) and fixture == "exported_text":
                    continue  # the two 10 MB bodies: three times each is enough
                response = client.post("/predict", **case)
                statuses.setdefault(k, set()).add(response.status_code)
                assert 400 <= response.status_code < 500, (k, response.status_code, response.text[:200])
                assert "error" in response.json()
        good = ({"json": {"inputs": ["a lovely film"]}} if fixture == "exported_text"
                else {"files": [("files", ("a.png", _png(), "image/png"))]})
        assert client.post("/predict", **good).status_code == 200
    assert sum(1 for _ in statuses) == len(kinds)
    assert {413} in statuses.values() and any(s & {400, 422} for s in statuses.values())
    assert any(415 in s for s in statuses.values())


def test_errors_name_the_bad_item(exported_text, exported_cnn):
    with TestClient(build_app(exported_text, runtime="onnx")) as client:
        assert "inputs[1]" in client.post("/predict", json={"inputs": ["ok", 3]}).json()["error"]
    with TestClient(build_app(exported_cnn, runtime="onnx")) as client:
        files = [("files", ("good.png", _png(), "image/png")), ("files", ("bad.jpg", b"nope", "image/jpeg"))]
        response = client.post("/predict", files=files)
        assert response.status_code == 400 and "files[1] (bad.jpg)" in response.json()["error"]


class _Slow:
    """A stand-in model that takes `delay` seconds per call and records the batch sizes it was given."""

    def __init__(self, delay: float = 0.0):
        self.classes = ["a", "b"]
        self.delay, self.sizes = delay, []

    def scores(self, items):
        self.sizes.append(len(items))
        time.sleep(self.delay)
        values = np.asarray(items, dtype=np.float32)
        return np.stack([values, -values], 1), []


def test_the_batcher_groups_concurrent_requests_and_returns_each_its_rows():
    model = _Slow(delay=0.01)
    batcher = DynamicBatcher(model.scores, max_batch=8, max_wait_ms=50, max_queue=100)

    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([float(i)]) for i in range(20)))
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert [float(probs[0, 0]) for probs, _ in results] == [float(i) for i in range(20)]
    assert len(model.sizes) < 20 and max(model.sizes) <= 8 and sum(model.sizes) == 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_overload_answers_503_with_retry_after_not_timeouts(exported_text):
    import uvicorn

    model = _Slow(delay=0.05)
    codec = get_codec("text")({}, exported_text)
    app = create_app(model, codec, {"modality": "text"}, max_batch=1, max_wait_ms=0, limits=Limits(max_queue=4))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)

        async def load():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                return await asyncio.gather(*(client.post("/predict", json={"inputs": ["1"]}) for _ in range(48)))

        responses = asyncio.run(load())
    finally:
        server.should_exit = True
        thread.join(10)
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 4
    assert all(r.headers.get("retry-after") == "1" for r in responses if r.status_code == 503)


@pytest.mark.slow
def test_headstart_serve_end_to_end_matches_predict_and_drains_on_sigterm(exported_text):
    texts = ["a wonderful and lovely film", "a dull and dreadful film", "a superb film", "painful and tedious"]
    exe = Path(sys.executable).with_name("headstart")
    expected = [json.loads(line) for line in subprocess.run(
        [exe, "predict", exported_text, *texts, "--runtime", "onnx"], capture_output=True, text=True, check=True,
        timeout=120).stdout.splitlines()]
    port = _free_port()
    # --max-wait-ms 1500 with room for every item: a batch waits 1.5 s, so requests are surely in flight at SIGTERM
    server = subprocess.Popen([exe, "serve", exported_text, "--port", str(port), "--runtime", "onnx", "--max-batch",
                               "100000", "--max-wait-ms", "1500", "--max-queue", "100000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        got = httpx.post(f"{base}/predict", json={"inputs": texts}, timeout=30).json()["predictions"]
        assert [p["label"] for p in got] == [r["label"] for r in expected]
        assert [p["score"] for p in got] == pytest.approx([r["score"] for r in expected], abs=1e-5)

        # Requests in flight when SIGTERM arrives are answered; then the process exits by itself.
        def call(_):
            response = httpx.post(f"{base}/predict", json={"inputs": texts * 16}, timeout=30)
            return response.status_code, time.monotonic()

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(call, i) for i in range(8)]
            time.sleep(0.5)
            signalled = time.monotonic()
            server.send_signal(signal.SIGTERM)
            outcomes = [f.result() for f in futures]
        # uvicorn shuts down gracefully, then re-raises the signal so that the exit status tells how it ended
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        assert [code for code, _ in outcomes] == [200] * 8
        assert all(done > signalled for _, done in outcomes)  # answered after the signal: drained, not cut off
        assert b"Traceback" not in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    with socket.socket() as s:  # nothing is left listening on the port
        assert s.connect_ex(("127.0.0.1", port)) != 0
