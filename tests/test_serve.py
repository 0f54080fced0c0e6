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
from headstart.serving.batcher import ItemRejected

from ._memory import peak_growth_mb
from .conftest import HANG_GUARD_S


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
        *_json_the_parser_breaks_on(),
    ]


def _json_the_parser_breaks_on() -> list[dict]:
    as_json = {"headers": {"content-type": "application/json"}}
    return [
        {"content": b'{"inputs": ["\\ud800 x"]}', **as_json},  # a lone surrogate (valid JSON, not valid Unicode)
        {"content": b"[" * 100_000 + b"]" * 100_000, **as_json},  # nested 100,000 deep
        {"content": b'{"inputs": [' + b"9" * 5000 + b"]}", **as_json},  # a 5,000-digit number
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


class _Poisonable:
    """A stand-in model for texts: the text's length as a score, and a ValueError for any batch holding "poison"
    (as a tokenizer raises on a string it cannot encode), recording the batch sizes it was given."""

    def __init__(self):
        self.classes = ["short", "long"]
        self.task_name, self.task_params = "classification", {}
        self.sizes = []

    def scores(self, items):
        self.sizes.append(len(items))
        if any("poison" in item for item in items):
            raise ValueError("cannot encode this text")
        values = np.asarray([len(item) for item in items], dtype=np.float32)
        return np.stack([1 / (1 + values), values / (1 + values)], 1), []


def _text_app(tmp_path, model, **settings):
    return create_app(model, get_codec("text")({}, tmp_path), {"modality": "text"}, **settings)


def test_json_the_parser_breaks_on_gets_a_4xx_naming_why(tmp_path):
    reasons = ["inputs[0]: the text holds a lone surrogate ('\\ud800') at character 0", "nested too deeply",
               "a number has too many digits"]
    with TestClient(_text_app(tmp_path, _Poisonable()), raise_server_exceptions=True) as client:
        for case, reason in zip(_json_the_parser_breaks_on(), reasons):
            response = client.post("/predict", **case)
            assert response.status_code in (400, 422) and reason in response.json()["error"], response.text
        assert client.post("/predict", json={"inputs": ["fine"]}).status_code == 200


def _submitted_together(model, requests: list[list[str]]) -> list:
    """Each request's result (or exception), the requests submitted to one batcher within one batching window."""
    batcher = DynamicBatcher(model.scores, max_batch=16, max_wait_ms=200, max_queue=100)

    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_an_item_the_model_raises_on_fails_only_its_own_request():
    model = _Poisonable()
    results = _submitted_together(model, [["ok", "poison" if i == 2 else "fine", "x" * i] for i in range(6)])
    assert model.sizes[0] == 18  # all six requests shared the first batch, which raised
    assert isinstance(results[2], ItemRejected) and results[2].index == 1 and "cannot encode" in results[2].reason
    for i, result in enumerate(results):
        if i != 2:
            probs, failures = result
            assert failures == [] and probs[:, 1].tolist() == pytest.approx([2 / 3, 4 / 5, i / (1 + i)])


def test_a_bad_request_in_a_batching_window_leaves_other_clients_200(tmp_path):
    texts = [["a good text"], ["another", "poison here"], ["fine"], ["also fine", "ok"], ["one more"], ["last"]]
    with TestClient(_text_app(tmp_path, _Poisonable(), max_batch=64, max_wait_ms=300)) as client, \
            ThreadPoolExecutor(len(texts)) as pool:
        responses = list(pool.map(lambda inputs: client.post("/predict", json={"inputs": inputs}), texts))
    assert [r.status_code for r in responses] == [200, 422, 200, 200, 200, 200]
    assert responses[1].json()["error"].startswith("inputs[1]: the model cannot take this item (ValueError")
    assert [len(r.json()["predictions"]) for r in responses if r.status_code == 200] == [1, 1, 2, 1, 1]


class _Even:
    """A stand-in model: the same probabilities for every item."""

    classes = ("a", "b")
    task_name, task_params = "classification", {}

    def scores(self, items):
        return np.full((len(items), 2), 0.5, np.float32), []


def _image_app(limits: Limits):
    codec = get_codec("image")({"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}, Path("."))
    return create_app(_Even(), codec, {"modality": "image"}, limits=limits)


def test_images_that_decode_too_large_get_413_before_decoding():
    """Six 12000 x 12000 PNGs of 140 kB each (432 MB each as RGB) in one request: 413 naming the limit and its
    option, with resident memory growing by far less than one decoded image, and back where it was after."""
    growth, result = peak_growth_mb(
        setup="""
            import gc
            from fastapi.testclient import TestClient
            from headstart.serving import Limits
            from tests._memory import png_of_black
            from tests.test_serve import _image_app, _png
            bomb = png_of_black(12000, 12000)
            client = TestClient(_image_app(Limits())).__enter__()
            client.post("/predict", files=[("files", ("warm.png", _png(), "image/png"))])  # first-call set-up
            gc.collect()
        """,
        action="""
            response = client.post("/predict", files=[("files", (f"bomb{i}.png", bomb, "image/png")) for i in range(6)])
            gc.collect()
            result = [response.status_code, response.json()["error"], _status("VmRSS") - _before]
        """)
    status, error, after_mb = result
    assert status == 413, error
    assert error == ("files[0] (bomb0.png): the image is 12,000 x 12,000 = 144,000,000 pixels; the limit is "
                     "40,000,000 (--max-pixels sets it)")
    assert growth < 100, f"resident memory grew by {growth:.0f} MB"
    assert after_mb < 20


def test_a_request_whose_images_decode_to_too_much_together_gets_413():
    picture = _png(size=(400, 400))  # 480 kB as RGB; the third passes 1 MB
    with TestClient(_image_app(Limits(max_decoded_mb=1.0))) as client:
        response = client.post("/predict", files=[("files", (f"p{i}.png", picture, "image/png")) for i in range(4)])
        assert response.status_code == 413
        assert response.json()["error"] == ("the items up to files[2] (p2.png) decode to 1.4 MB; the limit for one "
                                            "request is 1.0 MB (--max-decoded-mb sets it; split the request)")
        assert client.post("/predict", files=[("files", ("p.png", picture, "image/png"))] * 2).status_code == 200
    with TestClient(_image_app(Limits(max_pixels=100))) as client:
        response = client.post("/predict", files=[("files", ("p.png", _png(size=(11, 10)), "image/png"))])
        assert response.status_code == 413
        assert response.json()["error"].endswith("11 x 10 = 110 pixels; the limit is 100 (--max-pixels sets it)")


def test_an_hour_long_recording_gets_413_before_decoding(tmp_path):
    """An hour of silence as a 90 kB FLAC (230 MB decoded at 16 kHz, 4 GB in the audio smallcnn): 413 naming
    --max-audio-seconds, with resident memory growing by far less than the decoded recording; a short one passes."""
    growth, result = peak_growth_mb(
        setup="""
            import gc, io
            import numpy as np, soundfile
            from fastapi.testclient import TestClient
            from headstart.runtime.codecs import get_codec
            from headstart.serving.app import create_app
            from tests._memory import flac_of_silence
            from tests.test_serve import _Even

            codec = get_codec("audio")({"sample_rate": 16000, "min_samples": 16000}, None)
            client = TestClient(create_app(_Even(), codec, {"modality": "audio"})).__enter__()
            hour, short = flac_of_silence(3600), flac_of_silence(2)
            assert client.post("/predict", files=[("files", ("short.flac", short, "audio/flac"))]).status_code == 200
            gc.collect()
        """,
        action="""
            response = client.post("/predict", files=[("files", ("hour.flac", hour, "audio/flac"))] * 3)
            result = [response.status_code, response.json()["error"]]
        """)
    status, error = result
    assert status == 413 and error == ("files[0] (hour.flac): the recording is 3,600.0 s long; the longest taken is "
                                       "600 s (--max-audio-seconds sets it)")
    assert growth < 60, f"resident memory grew by {growth:.0f} MB"


class _Slow:
    """A stand-in model that takes `delay` seconds per call and records the batch sizes it was given."""

    def __init__(self, delay: float = 0.0):
        self.classes = ["a", "b"]
        self.task_name, self.task_params = "classification", {}
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
        timeout=HANG_GUARD_S).stdout.splitlines()]
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


class _Broken(_Poisonable):
    """A model that fails for any batch holding "crash" with an error of its own, not of the item (as a device out
    of memory would): the server's fault, not the client's."""

    def scores(self, items):
        if any("crash" in item for item in items):
            raise MemoryError("the device is out of memory")
        return super().scores(items)


def test_a_model_failure_that_is_not_the_item_is_a_server_error_for_that_request_only():
    fine, crashed, ok = _submitted_together(_Broken(), [["fine"], ["crash"], ["ok"]])
    assert isinstance(crashed, MemoryError) and not isinstance(crashed, ItemRejected)
    assert fine[1] == [] and ok[1] == []
