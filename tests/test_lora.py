"""`lora`: adapters injected with PEFT, the backbone frozen, saved with the head, merged on request."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

import headstart
from headstart.adapters import inject_adapters, merge_adapters
from headstart.backbones.timm_image import TimmBackbone
from headstart.errors import HeadstartError
from headstart.strategies import LoRA

from .conftest import HANG_GUARD_S, make_tiny_bert, write_text_table

TEXTS = ["a wonderful and great film number 1", "a dull and tedious film number 2", "a lovely film"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny BERT adapted with LoRA (not merged), and the untouched backbone weights it started from."""
    root = tmp_path_factory.mktemp("lora")
    bert = make_tiny_bert(root / "tiny-bert")
    table = write_text_table(root / "reviews.csv", n_per_class=40)
    start = headstart.fit(table, str(bert), "probe", max_length=32, cache=False).backbone.state_dict()
    model = headstart.fit(table, str(bert), "lora", out=root / "run", max_length=32, epochs=2, lr=5e-3)
    return root, model, start


def test_lora_trains_adapters_only(lora_run):
    _, model, start = lora_run
    lora = model.manifest.training["lora"]
    assert lora["trainable_fraction"] < 0.02 and lora["adapter_parameters"] > 0
    assert lora["targets"] == ["attention.self.query", "attention.self.key", "attention.self.value",
                               "attention.output.dense", "intermediate.dense", "output.dense"]
    state = model.backbone.state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    assert set(base) == set(start)
    assert all(torch.equal(base[k], start[k]) for k in start), "a frozen backbone weight changed"
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert len(lora_b) == 2 * 6 and any(v.abs().sum() > 0 for v in lora_b), "the adapters never moved from zero"


def test_lora_model_reloads_with_its_adapters(lora_run):
    root, model, _ = lora_run
    settings = model.manifest.strategy.settings
    assert settings["rank"] == 8 and settings["alpha"] == 16 and settings["merge"] is False
    with safe_open(root / "run" / "model" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys) and any(k.startswith("head.") for k in keys)
    loaded = headstart.load(root / "run" / "model")
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), model.predict_proba(TEXTS), atol=1e-6)


def test_loading_a_lora_model_imports_no_training_code(lora_run):
    """A fresh process loads the LoRA model (adapters rebuilt) and predicts as trained without importing a strategy
    module; and loading knew every strategy before any strategy module was imported."""
    root, model, _ = lora_run
    code = (f"import json, sys, headstart\nfrom headstart.structures import STRUCTURES\nknown = set(STRUCTURES)\n"
            f"scores = headstart.load({str(root / 'run' / 'model')!r}).predict_proba({TEXTS!r}).tolist()\n"
            "imported = sorted(m for m in sys.modules if m.startswith('headstart.strategies'))\n"
            "from headstart.strategies import STRATEGIES\n"
            "print(json.dumps([scores, imported, sorted(set(STRATEGIES) - known)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-2000:]
    scores, imported, unknown_to_loading = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(scores, model.predict_proba(TEXTS), atol=1e-6)
    assert imported == [] and unknown_to_loading == []


def test_merge_folds_adapters_into_plain_layers(tmp_path):
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=40)
    model = headstart.fit(table, str(bert), "lora", out=tmp_path / "run", max_length=32, epochs=1, lr=5e-3,
                          merge=True)
    assert model.manifest.training["lora"]["merged"] is True
    with safe_open(tmp_path / "run" / "model" / "model.safetensors", "pt") as f:
        names = f.keys()
    assert not [k for k in names if "lora_" in k or "base_layer" in k]
    loaded = headstart.load(tmp_path / "run" / "model")
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), model.predict_proba(TEXTS), atol=1e-6)


def test_merging_keeps_the_function():
    """W + alpha/r * B A in place of the adapted layer gives the same outputs as the layer with its adapter."""
    torch.manual_seed(0)
    backbone = TimmBackbone.create("efficientnet_lite0", pretrained=False, image_size=32)
    targets = backbone.lora_targets()
    assert targets and all(backbone.get_submodule(t).kernel_size == (1, 1) for t in targets)  # pointwise convs
    inject_adapters(backbone, {"rank": 4, "alpha": 8, "targets": targets}, dropout=0.0)
    assert all(p.requires_grad == ("lora_" in n) for n, p in backbone.named_parameters())
    for name, p in backbone.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # B starts at zero: make the adapters do something
    x = torch.randn(2, 3, 32, 32)
    backbone.eval()
    with torch.no_grad():
        adapted = backbone(x)
        merge_adapters(backbone)
        merged = backbone(x)
    assert not [n for n, _ in backbone.named_parameters() if "lora_" in n]
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=1e-4)


def test_lora_refuses_random_weights(shared_image_folder, tmp_path):
    with pytest.raises(HeadstartError, match="LoRA adapts pre-trained weights"):
        headstart.fit(shared_image_folder, "smallcnn", "lora", out=tmp_path / "run", image_size=16)


def test_unknown_targets_are_one_line(tmp_path):
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=10)
    with pytest.raises(HeadstartError, match="name layers of this backbone"):
        headstart.fit(table, str(bert), "lora", out=tmp_path / "run", max_length=32, targets=["no_such_layer"])


@pytest.mark.parametrize("setting", [{"rank": 0}, {"alpha": 0}, {"dropout": 1.0}, {"targets": "query"}])
def test_lora_settings_are_checked(setting):
    with pytest.raises(HeadstartError, match=next(iter(setting))):
        LoRA(**setting)


def test_cli_lora_options(tmp_path):
    import json

    from typer.testing import CliRunner

    from headstart.cli import app

    bert = make_tiny_bert(tmp_path / "tiny-bert")
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    runner = CliRunner()
    result = runner.invoke(app, ["fit", str(table), "--backbone", str(bert), "--strategy", "lora", "--rank", "4",
                                 "--alpha", "4", "--lora-targets", "query,value", "--merge", "--epochs", "1",
                                 "--max-length", "32", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "run" / "model" / "headstart.json").read_text())["strategy"]["settings"]
    assert (settings["rank"], settings["alpha"], settings["targets"], settings["merge"]) == (4, 4, ["query", "value"],
                                                                                          True)
    wrong = runner.invoke(app, ["fit", str(table), "--backbone", str(bert), "--rank", "4", "--out",
                                str(tmp_path / "probe")])
    assert wrong.exit_code == 2 and "it is a setting of lora" in wrong.output
