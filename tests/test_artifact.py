"""The saved model: typed manifest with a schema version, migration of older manifests, damaged folders, and a
loaded model that prepares its inference copy once."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import headstart
from headstart.errors import ArtifactError


@pytest.fixture(scope="module")
def saved(shared_image_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("saved") / "run"
    headstart.fit(shared_image_folder, "efficientnet_lite0", "probe", out=run, image_size=32)
    return run / "model"


def _copy(saved, tmp_path):
    import shutil

    target = tmp_path / "model"
    shutil.copytree(saved, target)
    return target


def _edit_manifest(folder, change):
    file = folder / "headstart.json"
    manifest = json.loads(file.read_text())
    change(manifest)
    file.write_text(json.dumps(manifest))


def test_a_schema_1_manifest_is_migrated_on_load(saved, tmp_path, shared_image_folder):
    folder = _copy(saved, tmp_path)

    def to_v1(m):  # what headstart 0.1 wrote
        m["format_version"] = 1
        m["training"] = {**m["training"], "precision": m.pop("precision"), "head_kind": "linear"}
        m["strategy"] = m["strategy"]["name"]

    _edit_manifest(folder, to_v1)
    model = headstart.load(folder)
    assert model.manifest.format_version == 3 and model.manifest.strategy.name == "probe"
    assert model.manifest.strategy.settings == {"head": "linear"} and model.manifest.precision == "auto"
    files = sorted((shared_image_folder / "red").glob("*.png"))[:3]
    np.testing.assert_allclose(model.predict_proba(files), headstart.load(saved).predict_proba(files), atol=1e-6)


def test_a_newer_schema_is_refused_with_the_version_that_wrote_it(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit_manifest(folder, lambda m: m.update(format_version=7, versions={"headstart": "9.1.0"}))
    with pytest.raises(ArtifactError, match=r"written by headstart 9\.1\.0 \(manifest schema 7\).*upgrade headstart"):
        headstart.load(folder)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(classes=m["classes"][:2]), r"2 class names but the head has 3 outputs"),
    (lambda m: m["head"].update(in_dim=7), r"head takes 7-d embeddings, but the backbone gives 1280-d"),
    (lambda m: m.pop("head"), r"field 'head': Field required"),
    (lambda m: m["head"].update(kind="transformer"), r"head must be one of"),
    (lambda m: m["backbone"].update(family="nope"), r"unknown backbone family 'nope'"),
    (lambda m: m["backbone"].pop("arch"), r"backbone description is incomplete"),
    (lambda m: m.update(modality="text"), r"says text"),
    (lambda m: m.update(strategy={"name": "magic", "settings": {}}), r"unknown strategy 'magic'"),
])
def test_a_tampered_manifest_is_a_one_line_error_naming_the_file(saved, tmp_path, change, message):
    folder = _copy(saved, tmp_path)
    _edit_manifest(folder, change)
    with pytest.raises(headstart.HeadstartError, match=message):
        headstart.load(folder)


def test_a_manifest_that_is_a_list_or_not_json(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "headstart.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match=r"headstart.json holds a JSON list"):
        headstart.load(folder)
    (folder / "headstart.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"is not valid JSON"):
        headstart.load(folder)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), r"not a readable safetensors file"),
    (lambda p: p.write_bytes(b"\x80\x04\x95garbage pickle"), r"not a readable safetensors file"),
    (lambda p: p.unlink(), r"model.safetensors is missing"),
])
def test_damaged_weights_are_a_one_line_error(saved, tmp_path, damage, message):
    folder = _copy(saved, tmp_path)
    damage(folder / "model.safetensors")
    with pytest.raises(ArtifactError, match=message):
        headstart.load(folder)


def test_the_inference_copy_is_made_once_and_one_item_starts_no_workers(saved, shared_image_folder, monkeypatch):
    model = headstart.load(saved)
    files = sorted((shared_image_folder / "red").glob("*.png"))
    first = model.predict_proba(files[:1])
    copy = model._inference
    assert copy is not None and not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy.modules())  # folded
    workers = []
    real_loader = torch.utils.data.DataLoader
    monkeypatch.setattr(torch.utils.data, "DataLoader",
                        lambda *a, **k: workers.append(k.get("num_workers", 0)) or real_loader(*a, **k))
    again = model.predict_proba(files[:1])
    assert model._inference is copy and workers == [0]
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("kind, weights", [
    ("linear", ["layers.1.bias", "layers.1.weight"]),
    ("mlp", ["layers.0.bias", "layers.0.weight", "layers.3.bias", "layers.3.weight"]),
])
def test_a_head_kind_in_the_manifest_rebuilds_its_class_under_the_saved_weight_names(kind, weights):
    """The manifest's head config (kind as a string) picks the registered head class; its weights keep the names
    that models were saved with before heads were classes, so those models load."""
    from headstart.heads import HEADS, ClassificationHead
    from headstart.manifests import HeadConfig

    torch.manual_seed(0)
    head = HEADS[kind](8, 3, hidden=16, dropout=0.0)
    rebuilt = ClassificationHead.from_config(HeadConfig(**head.config).model_dump())
    assert type(rebuilt) is type(head) and rebuilt.config == head.config
    assert sorted(rebuilt.state_dict()) == sorted([*weights, "standardize.mean", "standardize.scale"])
    rebuilt.load_state_dict(head.state_dict())
    x = torch.randn(4, 8)
    torch.testing.assert_close(rebuilt.eval()(x), head.eval()(x))
