"""The fast text path of the server (issue 27): texts tokenized in one call and run in length buckets, every answer
back at its own item and request; the limits and errors of /predict unchanged; the CPU's int8 kernels named.

A word-level tokenizer built here and an engine that echoes what it was fed keep these fast and exact: each
answer carries its own text's token count and first token, so any reordering shows."""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from headstart.runtime.codecs import get_codec
from headstart.runtime.onnx_model import OnnxClassifier, int8_kernels
from headstart.runtime.text_codec import BUCKET_ROWS, length_buckets
from headstart.serving import plain_access_lines
from headstart.serving.app import Limits, create_app

WORDS = [f"w{i}" for i in range(40)]
MAX_LENGTH = 24


@pytest.fixture(scope="module")
def text_codec(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("tokenizer")
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    preprocessing = {"tokenizer": "tokenizer.json", "max_length": MAX_LENGTH, "pad_id": 0, "pad_token": "[PAD]"}
    return get_codec("text")(preprocessing, folder)


class _EchoEngine:
    """Answers each row with (its token count / 100, its first token id / 100) and remembers the batches."""

    def __init__(self):
        self.calls: list[np.ndarray] = []

    def run(self, feeds):
        self.calls.append(feeds["input_ids"])
        return np.stack([feeds["attention_mask"].sum(1) / 100, feeds["input_ids"][:, 0] / 100], 1).astype(np.float32)


def _echo_classifier(codec) -> OnnxClassifier:
    """An OnnxClassifier around the echo engine (no graph file: only what `scores` reads is set)."""
    classifier = object.__new__(OnnxClassifier)
    classifier.codec, classifier.engine, classifier.classes = codec, _EchoEngine(), ["short", "long"]
    classifier.manifest = SimpleNamespace(task="classification", task_params={})
    return classifier


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def _expected(text: str) -> tuple[float, float]:
    words = text.split()[:MAX_LENGTH]
    return len(words) / 100, (WORDS.index(words[0]) + 2) / 100


def test_length_buckets_cover_every_item_once_within_the_row_limit():
    rng = random.Random(1)
    for _ in range(50):
        lengths = sorted(rng.randint(1, 128) for _ in range(rng.randint(1, 80)))
        rows = rng.randint(1, 16)
        ends = length_buckets(lengths, rows)
        starts = [0, *ends[:-1]]
        assert ends[-1] == len(lengths) and all(0 < e - s <= rows for s, e in zip(starts, ends))
    assert length_buckets([], 8) == []
    assert length_buckets([5] * 7 + [120], 8) == [7, 8]  # a long outlier is not padded into the short ones' call
    assert len(length_buckets([10] * 20, 8)) == 3  # equal lengths: as few calls as the row limit allows
    assert length_buckets([3, 4, 5, 6], 8, call_overhead=0) == [1, 2, 3, 4]  # calls cost nothing: no padding at all


def test_text_scores_come_back_in_item_order_from_length_buckets(text_codec):
    classifier = _echo_classifier(text_codec)
    texts = _texts(70)
    probs, failures = classifier.scores(texts)
    assert failures == []
    np.testing.assert_allclose(probs, [_expected(t) for t in texts], atol=1e-6)
    calls = classifier.engine.calls
    assert sum(len(c) for c in calls) == len(texts) and max(len(c) for c in calls) <= BUCKET_ROWS
    padded = sum(c.size for c in calls)
    sorted_lengths = sorted(min(len(t.split()), MAX_LENGTH) for t in texts)
    unbucketed = sum(len(sorted_lengths[i:i + 32]) * sorted_lengths[i:i + 32][-1] for i in range(0, len(texts), 32))
    assert padded < unbucketed  # the point of the buckets: less padding than calls of 32 cut in sorted order


def test_an_item_that_is_not_a_text_fails_alone_and_the_rest_keep_their_places(text_codec):
    classifier = _echo_classifier(text_codec)
    items = ["w1 w2 w3", 42, "w5"]
    probs, failures = classifier.scores(items)
    assert [i for i, _ in failures] == [1] and np.isnan(probs[1]).all()
    np.testing.assert_allclose(probs[[0, 2]], [_expected("w1 w2 w3"), _expected("w5")], atol=1e-6)


def _server(codec, limits: Limits | None = None, max_wait_ms: float = 0) -> TestClient:
    return TestClient(create_app(_echo_classifier(codec), codec, {"modality": "text"}, max_batch=64,
                                 max_wait_ms=max_wait_ms, limits=limits))


def test_concurrent_requests_batched_together_each_get_their_own_answers(text_codec):
    requests = [_texts(k % 4 + 1, seed=k) for k in range(24)]
    with _server(text_codec, max_wait_ms=150) as client, ThreadPoolExecutor(len(requests)) as pool:
        responses = list(pool.map(lambda texts: client.post("/predict", json={"inputs": texts}), requests))
        batches = client.app.state.batcher.batches
    assert batches < len(requests)  # requests did share model calls
    for texts, response in zip(requests, responses):
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        scores = [{r["label"]: r["score"] for r in p["top_k"]} for p in response.json()["predictions"]]
        np.testing.assert_allclose([[s["short"], s["long"]] for s in scores], [_expected(t) for t in texts], atol=1e-6)


@pytest.mark.parametrize("kwargs, status, error", [
    ({"json": {"inputs": ["w1"] * 5}}, 413, "5 items in one request; the limit is 4 (split the request)"),
    ({"content": b"x" * 300, "headers": {"content-type": "application/json"}}, 413,
     "the body is 300 bytes; the limit is 256"),
    ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "the body is empty"),
    ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "the body is not usable JSON"),
    ({"json": {"inputs": ["w1", 7]}}, 422, "inputs[1]: expected a string, got int"),
    ({"json": {"inputs": []}}, 422, "'inputs' is empty"),
    ({"json": {"texts": ["w1"]}}, 422, 'expected a JSON object {"inputs": [...]}'),
    ({"content": b"w1", "headers": {"content-type": "text/plain"}}, 415,
     "content type 'text/plain' is not accepted; this text model takes application/json"),
])
def test_the_limits_and_errors_of_predict_are_kept(text_codec, kwargs, status, error):
    with _server(text_codec, Limits(max_body_bytes=256, max_items=4)) as client:
        response = client.post("/predict", **kwargs)
        assert response.status_code == status and response.json()["error"].startswith(error)
        assert client.post("/predict", json={"inputs": "w3 w4"}).status_code == 200  # and the server goes on
        assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_int8_kernels_are_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    for flags, kernels in [("fpu avx2 avx512bw avx512_vnni amx_int8", "AMX"), ("avx2 avx512bw avx512_vnni", "AVX512-VNNI"),
                           ("avx2 avx_vnni", "AVX-VNNI"), ("sse4_2 avx2", "AVX2"), ("neon asimd", "unknown")]:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert int8_kernels(str(cpuinfo)) == kernels
    assert int8_kernels(str(tmp_path / "missing")) == "unknown"


def test_the_servers_access_log_gets_one_plain_handler_of_its_own():
    access = logging.getLogger("headstart.access")
    saved = access.handlers[:], access.propagate
    access.handlers.clear()
    try:
        plain_access_lines()
        plain_access_lines()
        assert len(access.handlers) == 1 and not access.propagate
        assert isinstance(access.handlers[0], logging.StreamHandler)
    finally:
        access.handlers[:], access.propagate = saved
