"""Shared fixtures: small generated data sets, an isolated cache, and the shared real data sets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports headstart or huggingface_hub (which read these once, at import): no hub access, and a
# throw-away Hugging Face cache, so that no test can download into or read from the user's real one.
_HF_HOME = Path(tempfile.mkdtemp(prefix="headstart-tests-hf-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_HF_HOME)
os.environ["HF_HUB_CACHE"] = str(_HF_HOME / "hub")
os.environ["HEADSTART_PROGRESS"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# The timeout of a test's child process: a guard against a hung process only, never a speed limit, so generous
# enough that a 2-core CI machine at load 8 (where a child's start-up alone can take minutes) never reaches it.
HANG_GUARD_S = 3600


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own embedding/data cache."""
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))


def shared_dataset(relative: str) -> Path:
    """A path under ../shared/datasets, or skip the test saying what is missing."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data set {relative} not found at {path} (see ../shared/datasets/README.md)")
    return path


def make_image_folder(root: Path, classes=("red", "green", "blue"), per_class: int = 12, size: int = 24,
                      seed: int = 0) -> Path:
    """Images whose dominant colour is their class, with noise: learnable, tiny, real files."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size, size, 3))
            pixels[..., c % 3] += 150
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture(scope="module")
def shared_image_folder(tmp_path_factory) -> Path:
    """The same colour images, made once per test module, for tests that only read them."""
    return make_image_folder(tmp_path_factory.mktemp("data") / "images")


def write_text_table(path: Path, n_per_class: int = 30, seed: int = 0) -> Path:
    """A tiny sentiment table with clearly positive and negative sentences."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    good = ["wonderful", "great", "delightful", "excellent", "lovely", "superb", "brilliant", "moving"]
    bad = ["terrible", "awful", "boring", "dreadful", "dull", "horrible", "tedious", "painful"]
    rows = []
    for i in range(n_per_class):
        rows.append({"text": f"a {rng.choice(good)} and {rng.choice(good)} film number {i}", "label": "positive"})
        rows.append({"text": f"a {rng.choice(bad)} and {rng.choice(bad)} film number {i}", "label": "negative"})
    df = pd.DataFrame(rows)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    return path


@pytest.fixture
def text_table(tmp_path) -> Path:
    return write_text_table(tmp_path / "reviews.csv")


@pytest.fixture(scope="module")
def shared_text_table(tmp_path_factory) -> Path:
    return write_text_table(tmp_path_factory.mktemp("data") / "reviews.csv")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HEADSTART_SKIP_SLOW") == "1":
        skip = pytest.mark.skip(reason="HEADSTART_SKIP_SLOW=1")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


TONES = {"low": 300.0, "mid": 900.0, "high": 2400.0}


def make_audio_folder(root: Path, per_class: int = 8, seed: int = 0, rates=(8000, 16000, 22050)) -> Path:
    """Noisy tones whose pitch is their class, of varied length, sample rate and channel count: real wav files."""
    import soundfile

    rng = np.random.default_rng(seed)
    for name, freq in TONES.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rate = int(rates[i % len(rates)])
            t = np.arange(int(rate * rng.uniform(0.3, 1.8))) / rate
            wave = 0.5 * np.sin(2 * np.pi * freq * rng.uniform(0.95, 1.05) * t) + 0.05 * rng.standard_normal(len(t))
            if i % 3 == 0:
                wave = np.stack([wave, 0.8 * wave], axis=1)  # stereo
            soundfile.write(folder / f"{name}_{i}.wav", wave.astype(np.float32), rate)
    return root


@pytest.fixture(scope="module")
def shared_audio_folder(tmp_path_factory) -> Path:
    """The tones, made once per test module, for tests that only read them."""
    return make_audio_folder(tmp_path_factory.mktemp("data") / "audio")


def make_tiny_bert(folder: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: a text backbone that trains and exports in seconds. Seeded,
    so that a test's outcome does not depend on which tests ran before it (the random weights decide, for one,
    whether LoRA beats the head stage on seven validation sentences)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from headstart.backbones.hf_text import minilm_location

    tokenizer = AutoTokenizer.from_pretrained(minilm_location(), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def small_cnn_run(tmp_path_factory) -> Path:
    """A smallcnn fine-tuned on 900 colour images, with a 500-image validation split (export checks parity on it)."""
    import headstart

    root = tmp_path_factory.mktemp("cnn-run")
    images = make_image_folder(root / "images", per_class=300, size=20)
    headstart.fit(images, "smallcnn", "finetune", out=root / "run", epochs=1, val_size=500, test_size=100,
                  cache=False)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_text_run(tmp_path_factory) -> Path:
    """A probe on a tiny BERT over 1,200 sentences, with a 500-sentence validation split."""
    import headstart

    root = tmp_path_factory.mktemp("text-run")
    table = write_text_table(root / "reviews.csv", n_per_class=600)
    bert = make_tiny_bert(root / "tiny-bert")
    headstart.fit(table, str(bert), "probe", out=root / "run", val_size=500, test_size=200, max_length=32, cache=False)
    return root / "run"


@pytest.fixture(scope="session")
def exported_cnn(small_cnn_run) -> Path:
    """small_cnn_run's model folder with model.onnx exported (and checked) in it."""
    from headstart.export import export_onnx

    export_onnx(small_cnn_run / "model")
    return small_cnn_run / "model"


@pytest.fixture(scope="session")
def exported_text(tiny_text_run) -> Path:
    from headstart.export import export_onnx

    export_onnx(tiny_text_run / "model")
    return tiny_text_run / "model"
