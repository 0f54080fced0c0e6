"""`pretrain`: each objective end to end on tiny data (the loss falls, the folder loads into `fit`), the data
sources, resume and time budgets, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import headstart
from headstart.backbones.folder import BACKBONE_MANIFEST
from headstart.cli import app
from headstart.data import read_unlabeled
from headstart.errors import BackboneError, DataError, HeadstartError
from headstart.pretraining import pretrain
from headstart.pretraining.contrastive import nt_xent
from headstart.pretraining.masked import random_patch_mask

from .conftest import make_image_folder, make_tiny_bert, write_text_table

FAST = {"backbone": "smallcnn", "image_size": 16, "batch_size": 12, "seed": 0}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy 2-core machine (no spin-waits)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("unlabeled") / "images", per_class=12, size=20)


def check_folder(result, objective: str, steps: int) -> dict:
    manifest = json.loads((result.path / BACKBONE_MANIFEST).read_text())
    p = manifest["pretraining"]
    assert p["objective"] == objective and p["steps"] == steps and p["paper"]
    assert p["data"]["items"] == 36 and len(p["data"]["fingerprint"]) == 32
    # Lower over the run: the last third of the steps against the first (single steps are too noisy to compare
    # on 36 items: a contrastive batch of 12 draws its negatives afresh each step).
    losses = [loss for _, loss in p["loss_curve"]]
    third = len(losses) // 3
    assert np.mean(losses[-third:]) < np.mean(losses[:third]), p["loss_curve"]
    assert len(p["loss_curve"]) == steps and p["base_weights"] == "random init"
    assert (result.path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (result.path / "backbone.safetensors").is_file()
    return p


@pytest.mark.parametrize("objective, options", [("autoencoder", {}), ("autoencoder", {"denoise": True}),
                                                ("masked", {}), ("contrastive", {})])
def test_image_objective_lowers_loss_and_loads_into_probe(images, tmp_path, objective, options):
    result = pretrain(images, objective, out=tmp_path / "ckpt", max_steps=24, lr=3e-3, **FAST, **options)
    p = check_folder(result, objective, 24)
    assert p["options"].get("denoise", False) == options.get("denoise", False)
    model = headstart.fit(images, backbone=str(result.path), strategy="probe")
    assert model.metrics["accuracy"] >= 0.5  # colour classes: easy even for lightly pretrained features
    assert model.classifier.backbone.image_size == 16


def test_finetune_from_pretrained_folder_and_cli(images, tmp_path):
    out = tmp_path / "ae"
    result = CliRunner().invoke(app, ["pretrain", str(images), "--objective", "autoencoder", "--backbone", "smallcnn",
                                      "--image-size", "16", "--max-steps", "6", "--batch-size", "12", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "6 steps" in result.stdout and f"--backbone{out}" in "".join(result.stdout.split())  # Rich wraps lines
    from safetensors.torch import load_file

    saved = load_file(str(out / "backbone.safetensors"))
    started = headstart.resolve_backbone(str(out)).state_dict()
    assert all(torch.equal(started[k], saved[k]) for k in saved)  # `--backbone CKPT` starts from its weights
    model = headstart.fit(images, backbone=str(out), strategy="finetune", epochs=1, out=tmp_path / "run")
    assert model.manifest.training["head_stage"]["epochs_run"] > 0  # a pretrained backbone: head stage first
    listed = CliRunner().invoke(app, ["backbones", str(out), "--json"])
    row = json.loads(listed.stdout)[-1]
    assert row["name"] == str(out) and row["offline"] and "autoencoder" in row["description"]
    # continued pretraining from that folder, with another objective
    again = pretrain(images, "contrastive", out=tmp_path / "cont", from_weights=str(out), max_steps=2, **FAST)
    assert again.pretraining["base_weights"].startswith("backbone folder")


def test_flat_folder_nested_folders_and_builtin(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(flat / f"{i}.png")
    (flat / "deeper" / "more").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(flat / "deeper" / "more" / "x.jpg")
    data = read_unlabeled(flat)
    assert data.modality == "image" and len(data) == 7 and not data.is_grayscale()
    digits = read_unlabeled("digits")
    assert len(digits) == 1797 and digits.is_grayscale()
    result = pretrain("digits", "contrastive", out=tmp_path / "d", max_steps=2, **FAST)
    assert result.pretraining["options"]["augmentation"] == "small-grayscale"
    assert result.pretraining["data"]["items"] == 1797


def test_text_sources(tmp_path):
    table = write_text_table(tmp_path / "t.csv", n_per_class=3)
    assert len(read_unlabeled(table)) == 6
    (tmp_path / "lines.txt").write_text("first line\n\n  second line  \n")
    assert read_unlabeled(tmp_path / "lines.txt").items == ["first line", "second line"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: MLM end to end in seconds."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.mark.parametrize("whole_word", [False, True])
def test_mlm_lowers_loss_and_loads_into_fit(tiny_bert, tmp_path, whole_word):
    table = write_text_table(tmp_path / "reviews.csv")
    result = pretrain(table, "mlm", str(tiny_bert), out=tmp_path / "mlm", max_steps=20, batch_size=16, lr=3e-3,
                      max_length=32, whole_word=whole_word)
    p = result.pretraining
    assert p["steps"] == 20 and p["final_loss"] < p["first_loss"] and p["options"]["mlm_head"] == "new"
    assert p["options"]["whole_word_mask"] is whole_word
    model = headstart.fit(table, backbone=str(result.path), strategy="probe")
    assert model.classifier.backbone.max_length == 32
    from safetensors.torch import load_file

    saved = load_file(str(result.path / "backbone.safetensors"))
    used = model.backbone.state_dict()
    assert all(torch.equal(used[k], saved[k]) for k in saved)  # the probe ran on the MLM-trained encoder


@pytest.mark.slow
def test_mlm_on_minilm_text_file(tmp_path):
    lines = [f"the {w} film was {v} and {u}" for w in ("new", "old", "long") for v in ("great", "dull")
             for u in ("moving", "tedious", "brilliant")]
    (tmp_path / "domain.txt").write_text("\n".join(lines * 4))
    result = pretrain(tmp_path / "domain.txt", "mlm", "minilm", out=tmp_path / "mlm", max_steps=8, batch_size=8,
                      lr=1e-4)
    p = result.pretraining
    assert p["final_loss"] < p["first_loss"] and p["data"]["items"] == 72
    table = write_text_table(tmp_path / "reviews.csv")
    model = headstart.fit(table, backbone=str(result.path), strategy="probe")
    assert model.metrics["accuracy"] >= 0.8


def test_resume_extends_the_run_and_checks_settings(images, tmp_path):
    first = pretrain(images, "masked", out=tmp_path / "m", max_steps=3, **FAST)
    assert first.pretraining["steps"] == 3
    second = pretrain(images, "masked", out=tmp_path / "m", max_steps=6, resume=True, **FAST)
    assert second.pretraining["steps"] == 6 and len(second.pretraining["loss_curve"]) == 6
    assert second.pretraining["loss_curve"][:3] == first.pretraining["loss_curve"]
    with pytest.raises(HeadstartError, match=r"mask_ratio|objective_options"):
        pretrain(images, "masked", out=tmp_path / "m", max_steps=8, resume=True, mask_ratio=0.7, **FAST)
    with pytest.raises(HeadstartError, match="no checkpoint"):
        pretrain(images, "masked", out=tmp_path / "other", max_steps=2, resume=True, **FAST)


def test_time_budget_stops_training(images, tmp_path):
    result = pretrain(images, "autoencoder", out=tmp_path / "t", max_minutes=0.03, **FAST)
    p = result.pretraining
    assert p["stopped_by"] == "time budget" and p["steps"] >= 1 and p["train_seconds"] < 30


def test_unreadable_images_skipped_or_strict(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", per_class=3, size=12)
    (folder / "red" / "broken.png").write_bytes(b"not a png")
    result = pretrain(folder, "autoencoder", out=tmp_path / "ok", max_steps=1, **{**FAST, "batch_size": 4})
    assert result.pretraining["data"]["skipped_unreadable"] == 1 and result.pretraining["data"]["items"] == 9
    with pytest.raises(DataError, match="unreadable"):
        pretrain(folder, "autoencoder", out=tmp_path / "strict", max_steps=1, strict=True, **FAST)


def test_nt_xent_and_patch_mask():
    import torch

    g = torch.Generator().manual_seed(0)
    z, other = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    assert nt_xent(z, z, 0.5) < nt_xent(z, other, 0.5)  # identical views: lower loss
    mask = random_patch_mask(4, 28, 3, 0.5)
    assert mask.shape == (4, 1, 28, 28) and 0.3 < float(mask.mean()) < 0.7


def _bad_cases(tmp_path, images):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    write_text_table(tmp_path / "texts" / "a.csv", n_per_class=2)
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "notes.csv").write_text("id,score\n1,2\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    (tmp_path / "file.bin").write_bytes(b"x")
    table = write_text_table(tmp_path / "t.csv", n_per_class=2)
    return {
        "missing": (dict(data=tmp_path / "nope", objective="autoencoder"), DataError, "does not exist"),
        "empty folder": (dict(data=tmp_path / "empty", objective="masked"), DataError, "has no image or audio files"),
        "tables in folder": (dict(data=tmp_path / "texts", objective="mlm"), DataError, "point at the file"),
        "blank text file": (dict(data=tmp_path / "blank.txt", objective="mlm"), DataError, "no non-empty"),
        "no text column": (dict(data=tmp_path / "notes.csv", objective="mlm"), DataError, "--text-column"),
        "unknown format": (dict(data=tmp_path / "file.bin", objective="mlm"), DataError, "not a table"),
        "unknown objective": (dict(data=images, objective="jigsaw"), HeadstartError, "use one of"),
        "mlm on images": (dict(data=images, objective="mlm"), HeadstartError, "--objective .*autoencoder"),
        "images objective on text": (dict(data=table, objective="contrastive"), HeadstartError, "--objective mlm"),
        "text backbone for images": (dict(data=images, objective="autoencoder", backbone="minilm"), BackboneError,
                                     "takes text"),
        "unknown backbone": (dict(data=images, objective="autoencoder", backbone="vgg99"), BackboneError,
                             "unknown backbone"),
        "out is someone's folder": (dict(data=images, objective="autoencoder", out=tmp_path / "mine"),
                                    HeadstartError, "not a headstart backbone"),
        "missing --from": (dict(data=images, objective="autoencoder", from_weights=str(tmp_path / "w.pt")),
                           BackboneError, "no such file"),
        "no published weights": (dict(data=images, objective="autoencoder", from_weights="pretrained"),
                                 BackboneError, "no published"),
        "bad budget": (dict(data=images, objective="autoencoder", max_minutes=-1), HeadstartError,
                       "--max-minutes must be positive"),
        "bad mask ratio": (dict(data=images, objective="masked", mask_ratio=1.5), HeadstartError, "--mask-ratio"),
    }


BAD = ["missing", "empty folder", "tables in folder", "blank text file", "no text column", "unknown format",
       "unknown objective", "mlm on images", "images objective on text", "text backbone for images",
       "unknown backbone", "out is someone's folder", "missing --from", "no published weights", "bad budget",
       "bad mask ratio"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_one_line_error(tmp_path, images, case):
    kwargs, error, message = _bad_cases(tmp_path, images)[case]
    kwargs = {"backbone": "smallcnn", "out": tmp_path / "out", "max_steps": 1, **kwargs}
    with pytest.raises(error, match=message) as info:
        pretrain(kwargs.pop("data"), kwargs.pop("objective"), kwargs.pop("backbone"), **kwargs)
    assert "\n" not in str(info.value)
    assert (tmp_path / "mine" / "precious.txt").is_file()


def test_cli_bad_input_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["pretrain", str(tmp_path / "nope"), "--objective", "masked", "--backbone",
                                      "smallcnn", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "error:" in result.output and "does not exist" in result.output


def test_backbone_folder_takes_a_new_input_size_but_not_a_weights_file(images, tmp_path):
    result = pretrain(images, "autoencoder", out=tmp_path / "ae", max_steps=2, **FAST)
    assert headstart.resolve_backbone(str(result.path)).image_size == 16
    assert headstart.resolve_backbone(str(result.path), image_size=24).image_size == 24
    with pytest.raises(BackboneError, match="carries its own weights"):
        headstart.resolve_backbone(str(result.path), weights=str(tmp_path / "w.safetensors"))
