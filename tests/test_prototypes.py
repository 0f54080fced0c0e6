"""`prototypes`: nearest class mean on centred unit embeddings, and what `auto` and the splits do with few labels."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

import headstart
from headstart.data import load_data, make_splits
from headstart.errors import DataError, SettingsError
from headstart.heads import PrototypeHead, trainable_head_kinds
from headstart.tasks import task_of

from .conftest import make_tiny_bert, write_text_table


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def nearest_class_mean(train_x: np.ndarray, labels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The reference: SimpleShot's CL2N nearest class mean, written out in numpy."""
    mean = train_x.mean(0)

    def unit(a):
        a = a - mean
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    means = np.stack([unit(train_x)[labels == c].mean(0) for c in range(labels.max() + 1)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return unit(x) @ means.T


def test_the_head_gives_scaled_cosines_to_the_class_means():
    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(30, 8)).astype(np.float32) + 3.0  # off-centre, as pooled activations are
    labels = np.repeat(np.arange(3), 10)
    test_x = rng.normal(size=(12, 8)).astype(np.float32) + 3.0
    head = PrototypeHead.from_class_means(task_of({"task": "classification"}), train_x, labels, ["a", "b", "c"],
                                          logit_scale=10.0)
    np.testing.assert_allclose(head.logits(test_x), 10.0 * nearest_class_mean(train_x, labels, test_x), atol=1e-5)
    np.testing.assert_allclose(head.probabilities(test_x).sum(1), 1.0, atol=1e-6)


def test_a_fitted_prototypes_model_predicts_the_nearest_class_mean_and_reloads(tiny_bert, tmp_path):
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    model = headstart.fit(table, str(tiny_bert), "prototypes", max_length=32, out=tmp_path / "run", cache=False)
    assert model.manifest.strategy.name == "prototypes" and model.manifest.head.kind == "prototype"
    assert 0.0 <= model.metrics["accuracy"] <= 1.0
    texts = ["a wonderful and great film number 1", "a dull and tedious film", "a lovely film"]
    again = headstart.load(tmp_path / "run" / "model")
    np.testing.assert_allclose(again.predict_proba(texts), model.predict_proba(texts), atol=1e-6)
    # The weights are the class means of the training split's embeddings, whatever the temperature validation chose.
    head = model.classifier.head
    assert isinstance(head, PrototypeHead)
    weights = head.layers[-1].weight.detach().numpy()
    np.testing.assert_allclose(np.linalg.norm(weights, axis=1), 10.0, rtol=1e-5)


def test_prototype_is_not_a_head_that_gradient_strategies_offer():
    assert "prototype" not in trainable_head_kinds() and "linear" in trainable_head_kinds()
    with pytest.raises(SettingsError, match="linear"):
        headstart.strategies.Probe(head="prototype")
    with pytest.raises(SettingsError, match="logit_scale"):
        headstart.strategies.Prototypes(logit_scale=0)


def test_prototypes_refuse_a_backbone_without_pretrained_weights(tmp_path):
    from .conftest import make_image_folder

    images = make_image_folder(tmp_path / "images", per_class=6)
    with pytest.raises(headstart.errors.HeadstartError, match="no pre-trained weights"):
        headstart.fit(images, "smallcnn", "prototypes", cache=False)


def test_auto_keeps_the_better_of_class_means_and_the_probe_on_validation(tiny_bert, tmp_path, caplog):
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    with caplog.at_level(logging.INFO, logger="headstart"):
        model = headstart.fit(table, str(tiny_bert), "auto", max_length=32, labels_per_class=3, cache=False,
                              out=tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto:")]
    assert len(lines) == 1, lines
    found = re.fullmatch(r"auto: (\w+) \(text, 3 labels/class < 100: fine-tuning would overfit; val_accuracy: "
                         r"(\w+) ([\d.]+), (\w+) ([\d.]+), a switch needs > \+([\d.]+)\)", lines[0])
    assert found, lines[0]
    kept, guess, guess_score, other, other_score, margin = found.groups()
    assert guess == "prototypes" and other == "probe"  # 6 labels in all: class means are the prior's guess
    assert float(margin) == pytest.approx(0.5 / len(model.recorded_splits(table).val) ** 0.5, abs=1e-3)
    assert kept == (other if float(other_score) - float(guess_score) > float(margin) else guess)
    assert model.manifest.strategy.settings["chosen"] == kept
    texts = ["a lovely film", "an awful film"]
    np.testing.assert_allclose(headstart.load(tmp_path / "run" / "model").predict_proba(texts),
                               model.predict_proba(texts), atol=1e-6)


@pytest.mark.parametrize("few", [True, False])
def test_on_a_validation_tie_auto_takes_the_prior_guess(few, tiny_bert, tmp_path, monkeypatch):
    from headstart.strategies import auto
    from headstart.tasks.classification import Classification

    monkeypatch.setattr(Classification, "validation_score", lambda self, logits, labels, params: 0.5)
    if not few:  # the prior's thresholds at zero: the probe is the guess
        monkeypatch.setattr(auto, "PROTOTYPES_MAX_PER_CLASS", 0)
        monkeypatch.setattr(auto, "PROTOTYPES_MAX_TOTAL", 0)
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=12)
    model = headstart.fit(table, str(tiny_bert), "auto", max_length=32, labels_per_class=3, cache=False)
    assert model.manifest.strategy.settings["chosen"] == ("prototypes" if few else "probe")


def test_a_class_with_one_example_keeps_it_for_training(tmp_path):
    rows = [{"text": f"sentence {i} about {c}", "label": c} for c, n in (("a", 1), ("b", 6), ("c", 6)) for i in range(n)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    for seed in range(5):
        splits = make_splits(load_data(tmp_path / "t.csv"), val_size=2, test_size=3, seed=seed)
        assert splits.train.class_counts()["a"] == 1, seed
        assert len(splits.val) == 2 and len(splits.test) == 3
        held = set(splits.val.items) | set(splits.test.items)
        assert not held & set(splits.train.items)
        assert len(held | set(splits.train.items)) == 13


def test_one_example_per_class_cannot_be_cut_and_says_what_to_do(tmp_path):
    rows = [{"text": f"sentence about {c}", "label": c} for c in "abcd"]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"4 of its 4 classes have a single example.*at least 2 examples per class"):
        make_splits(load_data(tmp_path / "t.csv"))


def test_a_prototypes_model_exports_to_onnx_and_passes_its_parity_check(tiny_bert, tmp_path):
    pytest.importorskip("onnxruntime")
    from headstart.export import export_onnx

    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    headstart.fit(table, str(tiny_bert), "prototypes", max_length=32, out=tmp_path / "run", cache=False)
    report = export_onnx(tmp_path / "run" / "model")
    assert report.graph.exists()
    assert report.parity["top1_agreement"] == 1.0 and report.parity["max_abs_diff"] <= report.parity["max_abs_diff_allowed"]


def test_auto_embeds_each_split_once_for_both_candidates(tiny_bert, tmp_path, monkeypatch):
    """Class means and the probe share one embedding pass, even with the cache off."""
    from headstart.strategies import base

    calls = []
    embed = base.embed_dataset
    monkeypatch.setattr(base, "embed_dataset", lambda backbone, data, *args, **kw: calls.append(len(data.items))
                        or embed(backbone, data, *args, **kw))
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=12)
    headstart.fit(table, str(tiny_bert), "auto", max_length=32, labels_per_class=3, cache=False)
    assert len(calls) == 2, calls  # train and val, once each (the test split is embedded by evaluation)
