"""`auto`: the rule that picks a strategy, the one line that explains it, and models that reload."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import headstart
from headstart.backbones import resolve_backbone
from headstart.backbones.timm_image import TimmBackbone
from headstart.errors import HeadstartError
from headstart.strategies import auto
from headstart.strategies.auto import choose_strategy

from .conftest import make_tiny_bert, write_text_table


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def test_the_rule(tiny_bert, monkeypatch):
    text = resolve_backbone(str(tiny_bert))
    # A plain encoder with fewer than 100 labels per class: both frozen-backbone heads, the prior's guess first.
    assert choose_strategy(text, 60, 2, 120) == (("probe", "prototypes"), "text, 60 labels/class < 100: "
                                                                          "fine-tuning would overfit")
    assert choose_strategy(text, 50, 2, 100)[0] == ("prototypes", "probe")  # 100 labels in all
    assert choose_strategy(text, 2, 77, 154)[0] == ("prototypes", "probe")  # 2 per class
    assert choose_strategy(text, 3, 77, 231)[0] == ("probe", "prototypes")  # many classes: the total decides
    assert choose_strategy(text, 500, 2, 1000)[0] == ("finetune",)
    text.sentence_encoder = True
    assert choose_strategy(text, 8, 2, 16) == (("contrastive",), "text, 8 labels/class <= 64, 2 classes <= 6, "
                                                                 "sentence encoder")
    assert choose_strategy(text, 64, 6, 384)[0] == ("contrastive",)
    assert choose_strategy(text, 65, 2, 130)[0] == ("probe", "prototypes")
    assert choose_strategy(text, 8, 77, 616)[0] == ("probe", "prototypes")  # more classes (Banking77)
    scratch = TimmBackbone.create("efficientnet_lite0", pretrained=False, image_size=32)
    assert choose_strategy(scratch, 5, 3, 15)[0] == ("finetune",)
    scratch.is_pretrained = True
    assert choose_strategy(scratch, 99, 3, 297)[0] == ("probe", "prototypes")
    assert choose_strategy(scratch, 100, 3, 300)[0] == ("finetune",)
    monkeypatch.setattr(auto, "LORA_MIN_PARAMETERS", 1_000_000)
    names, reason = choose_strategy(scratch, 100, 3, 300)
    assert names == ("lora",) and reason == "image, 100 labels/class, 3M parameters > 1M"


def test_auto_says_why_and_reloads(tiny_bert, tmp_path, caplog):
    (tiny_bert / "modules.json").write_text("[]")  # a sentence-transformers folder: a sentence encoder
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    with caplog.at_level(logging.INFO, logger="headstart"):
        model = headstart.fit(table, str(tiny_bert), "auto", max_length=32, labels_per_class=8, out=tmp_path / "run")
    (tiny_bert / "modules.json").unlink()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto:")]
    assert lines == ["auto: contrastive (text, 8 labels/class <= 64, 2 classes <= 6, sentence encoder)"]
    settings = model.manifest.strategy.settings
    assert model.manifest.strategy.name == "auto" and settings["chosen"] == "contrastive"
    assert model.manifest.training["auto"]["reason"] == "text, 8 labels/class <= 64, 2 classes <= 6, sentence encoder"
    assert "pair_stage" in model.manifest.training
    texts = ["a wonderful and great film number 1", "a dull and tedious film"]
    np.testing.assert_allclose(headstart.load(tmp_path / "run" / "model").predict_proba(texts),
                               model.predict_proba(texts), atol=1e-6)


def test_a_chosen_lora_reloads_with_its_adapters(tiny_bert, tmp_path, monkeypatch):
    for rule in ("PROTOTYPES_MAX_PER_CLASS", "PROTOTYPES_MAX_TOTAL", "PROBE_MAX_LABELS", "LORA_MIN_PARAMETERS"):
        monkeypatch.setattr(auto, rule, 0)
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    model = headstart.fit(table, str(tiny_bert), "auto", max_length=32, out=tmp_path / "run")
    assert model.manifest.strategy.settings["chosen"] == "lora"
    texts = ["a lovely film", "an awful film"]
    np.testing.assert_allclose(headstart.load(tmp_path / "run" / "model").predict_proba(texts),
                               model.predict_proba(texts), atol=1e-6)


def test_auto_needs_out_when_it_chooses_a_checkpointing_strategy(tiny_bert, tmp_path):
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=130)
    expected = r"auto chose finetune \(text, [.\d]+ labels/class >= 100, 1M parameters\), which writes"
    with pytest.raises(HeadstartError, match=expected):
        headstart.fit(table, str(tiny_bert), "auto", max_length=32, test_size=10)
