"""fit/load/evaluate through the Python API: strategies, cache, artifact, resume, unreadable files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import headstart
from headstart.errors import DataError, HeadstartError, SettingsError
from headstart.strategies import FineTune, Probe

from .conftest import make_image_folder, write_text_table


@pytest.fixture(scope="module")
def probe_run(shared_image_folder, tmp_path_factory):
    """One efficientnet_lite0 probe at 64 px, shared by the tests that only read its results."""
    run = tmp_path_factory.mktemp("probe") / "run"
    model = headstart.fit(shared_image_folder, "efficientnet_lite0", "probe", out=run, image_size=64, test_size=9)
    return model, run


def test_probe_fit_save_load_predict_identical(probe_run, shared_image_folder):
    model, run = probe_run
    assert model.metrics["accuracy"] >= 0.89  # colour classes are easy for an ImageNet backbone
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(metrics)
    manifest = json.loads((run / "model" / "headstart.json").read_text())
    assert manifest["classes"] == ["blue", "green", "red"] and manifest["backbone"]["image_size"] == 64
    assert manifest["strategy"] == {"name": "probe", "settings": Probe().settings()}
    assert manifest["format_version"] == 3
    assert (run / "model" / "model.safetensors").is_file() and not list((run / "model").glob("*.pt*"))
    loaded = headstart.load(run / "model")
    files = sorted((shared_image_folder / "red").glob("*.png"))
    np.testing.assert_allclose(loaded.predict_proba(files), model.predict_proba(files), atol=1e-5)
    assert set(loaded.predict(files)) == {"red"}


def test_probe_keeps_backbone_and_batchnorm_statistics_frozen(probe_run):
    model, _ = probe_run
    fresh = headstart.resolve_backbone("efficientnet_lite0", image_size=64).state_dict()
    trained = model.backbone.state_dict()
    assert all(torch.equal(fresh[k], trained[k]) for k in fresh)  # running_mean/var included


def test_second_identical_probe_does_no_forward_pass(image_folder, tmp_path, monkeypatch):
    first = headstart.fit(image_folder, "efficientnet_lite0", "probe", out=tmp_path / "a", image_size=64)
    assert first.manifest.embedding_cache["misses"] == 36

    def forbidden(*args, **kwargs):
        raise AssertionError("backbone forward pass on cached data")

    from headstart import embeddings

    original = embeddings.compute_embeddings
    monkeypatch.setattr(embeddings, "compute_embeddings", forbidden)
    second = headstart.fit(image_folder, "efficientnet_lite0", "probe", out=tmp_path / "b", image_size=64)
    assert second.manifest.embedding_cache == {"hits": 36, "misses": 0}
    assert second.metrics["accuracy"] == first.metrics["accuracy"]

    from PIL import Image

    monkeypatch.setattr(embeddings, "compute_embeddings", original)
    Image.new("RGB", (24, 24), (0, 0, 255)).save(image_folder / "blue" / "0.png")  # changed content
    again = headstart.fit(image_folder, "efficientnet_lite0", "probe", out=tmp_path / "c", image_size=64)
    assert again.manifest.embedding_cache["misses"] == 1


def test_unreadable_images_skipped_with_count_or_strict_error(image_folder, tmp_path, caplog):
    (image_folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (image_folder / "green" / "0.png").read_bytes()
    (image_folder / "green" / "truncated.png").write_bytes(good[: len(good) // 2])
    model = headstart.fit(image_folder, "efficientnet_lite0", "probe", out=tmp_path / "r", image_size=64)
    assert sum(model.manifest.data.splits.values()) == 36  # 38 files, 2 skipped
    assert "unreadable image(s) skipped" in caplog.text
    with pytest.raises(DataError, match="unreadable image"):
        headstart.fit(image_folder, "efficientnet_lite0", "probe", out=tmp_path / "s", image_size=64, strict=True,
                      cache=False)


def test_finetune_from_scratch_resumes_where_it_stopped(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "imgs", per_class=20, size=16)
    steps = []
    from headstart.strategies.finetune_trainer import FineTuneModule

    original = FineTuneModule.training_step
    monkeypatch.setattr(FineTuneModule, "training_step",
                        lambda self, batch, i: steps.append(self.current_epoch) or original(self, batch, i))
    run = tmp_path / "run"
    first = headstart.fit(data, "smallcnn", "finetune", out=run, epochs=2, image_size=16, batch_size=16)
    assert (run / "checkpoints" / "last.ckpt").is_file() and sorted(set(steps)) == [0, 1]
    steps.clear()
    resumed = headstart.fit(data, "smallcnn", "finetune", out=run, epochs=3, image_size=16, batch_size=16, resume=True)
    assert sorted(set(steps)) == [2]  # epochs 0-1 restored, not retrained
    assert resumed.manifest.training["finetune"]["steps"] == first.manifest.training["finetune"]["steps"] * 3 // 2
    assert resumed.metrics["accuracy"] >= 0.6


def test_finetune_uses_discriminative_learning_rates():
    from headstart.heads import Classifier, LinearHead
    from headstart.strategies.finetune_trainer import discriminative_groups

    backbone = headstart.resolve_backbone("efficientnet_lite0")
    head = LinearHead(1280, 3)
    groups = discriminative_groups(Classifier(backbone, head), lr=1e-3, lr_ratio=10, weight_decay=0.0)
    rates = [g["lr"] for g in groups]
    assert rates == sorted(rates) and rates[0] == pytest.approx(1e-4) and rates[-1] == rates[-2] == 1e-3
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(backbone.parameters())) + len(list(head.parameters()))


def test_text_finetune_moves_the_encoder_and_round_trips(shared_text_table, tmp_path):
    run = tmp_path / "text"
    table = write_text_table(tmp_path / "more.csv", n_per_class=80)
    before = {k: v.clone() for k, v in headstart.resolve_backbone("minilm").state_dict().items()}
    model = headstart.fit(table, "minilm", FineTune(epochs=2, batch_size=16, weight_decay=0.05), out=run)
    assert "kept" not in model.manifest.training["finetune"]
    after = model.backbone.state_dict()
    moved = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert len(moved) > 30  # every layer group learned, not only the head
    assert model.manifest.strategy.settings["weight_decay"] == 0.05
    loaded = headstart.load(run / "model")
    texts = ["a wonderful and superb film", "a dull and tedious film"]
    assert loaded.predict(texts) == model.predict(texts)
    assert loaded.evaluate(shared_text_table)["accuracy"] >= 0.9
    assert (run / "model" / "backbone" / "tokenizer.json").is_file()


def test_probe_needs_pretrained_backbone_and_matching_modality(shared_image_folder, shared_text_table, tmp_path):
    with pytest.raises(HeadstartError, match="use --strategy finetune"):
        headstart.fit(shared_image_folder, "smallcnn", "probe", out=tmp_path / "x")
    with pytest.raises(HeadstartError, match=r"takes image inputs, but the data are text.*--backbone minilm"):
        headstart.fit(shared_text_table, "efficientnet_lite0", "probe", out=tmp_path / "y")
    with pytest.raises(HeadstartError, match="unknown strategy 'lora-ish'"):
        headstart.fit(shared_image_folder, "efficientnet_lite0", "lora-ish")


@pytest.mark.parametrize("settings, message", [
    ({"epochs": 0}, r"epochs \(--epochs\) must be a whole number >= 1, got 0"),
    ({"epochs": -1}, r"--epochs"), ({"epochs": 1.5}, r"whole number"),
    ({"batch_size": 0}, r"--batch-size"), ({"lr": -1.0}, r"--lr\) must be a number > 0"),
    ({"lr": float("nan")}, r"--lr"), ({"head": "transformer"}, r"--head\) must be one of linear, mlp"),
    ({"lr_ratio": 3.0}, r"strategy 'probe' has no setting lr_ratio.*setting of finetune"),
    ({"warmup_fraction": 0.1}, r"no setting warmup_fraction"),
    ({"label_smoothing": 1.0}, r"--label-smoothing"), ({"patience": 0}, r"--patience"),
])
def test_probe_settings_are_validated_before_any_work(settings, message, shared_image_folder, monkeypatch):
    monkeypatch.setattr("headstart.api.load_data", lambda *a, **k: pytest.fail("data read before settings checked"))
    with pytest.raises(SettingsError, match=message):
        headstart.fit(shared_image_folder, "efficientnet_lite0", "probe", **settings)


@pytest.mark.parametrize("settings, message", [
    ({"lr_ratio": -1.0}, r"--lr-ratio"), ({"lr_ratio": 0.5}, r"--lr-ratio\) must be a number >= 1"),
    ({"warmup_fraction": 1.0}, r"--warmup-fraction"), ({"weight_decay": -0.1}, r"--weight-decay"),
])
def test_finetune_settings_are_validated(settings, message):
    with pytest.raises(SettingsError, match=message):
        FineTune(**settings)


def test_fit_options_are_validated(shared_image_folder):
    for options, message in (({"image_size": 0}, "--image-size"), ({"max_length": 0}, "--max-length"),
                              ({"precision": "fp8"}, "--precision"), ({"seed": -1}, "--seed")):
        with pytest.raises(SettingsError, match=message):
            headstart.fit(shared_image_folder, "efficientnet_lite0", "probe", **options)
    with pytest.raises(SettingsError, match="inside the strategy object"):
        headstart.fit(shared_image_folder, "efficientnet_lite0", Probe(), epochs=3)


def test_embedding_cache_serves_duplicate_items(tmp_path):
    from headstart.embedding_cache import EmbeddingCache

    cache = EmbeddingCache("k", root=tmp_path)
    cache.store([b"a" * 16, b"b" * 16], np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    out, found = cache.lookup([b"b" * 16, b"a" * 16, b"b" * 16, b"c" * 16], dim=2)
    assert found.tolist() == [True, True, True, False]
    assert out[:3].tolist() == [[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]] and out[3].tolist() == [0.0, 0.0]


def test_fp32_finetune_of_a_pretrained_image_backbone_after_its_head_stage(shared_image_folder, tmp_path):
    """The head stage's extraction (inference mode, channels_last) must leave the weights trainable."""
    before = headstart.resolve_backbone("efficientnet_lite0", image_size=32).model.conv_stem.weight.clone()
    model = headstart.fit(shared_image_folder, "efficientnet_lite0", "finetune", out=tmp_path / "r", epochs=1,
                          image_size=32, precision="fp32", batch_size=16)
    record = model.manifest.training["finetune"]
    assert record["precision"] == "32-true" and record["steps"] == 2
    if record.get("kept") != "head stage":
        assert not torch.equal(model.backbone.model.conv_stem.weight, before)  # the stem learned too


def test_finetune_keeps_the_head_stage_when_it_never_does_better(shared_text_table, tmp_path, caplog):
    """A destructive learning rate on tiny data must not leave a model worse than the frozen-backbone one."""
    model = headstart.fit(shared_text_table, "minilm", "finetune", out=tmp_path / "r", epochs=1, lr=0.05,
                          batch_size=16)
    assert model.manifest.training["finetune"].get("kept") == "head stage"
    assert "keeping the head-stage model" in caplog.text
    assert model.metrics["accuracy"] >= 0.9
