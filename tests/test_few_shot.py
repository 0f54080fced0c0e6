"""`contrastive` (SetFit-style few-shot text): pair sampling, the pair stage, the artifact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headstart
from headstart.errors import HeadstartError
from headstart.strategies import Contrastive
from headstart.strategies.contrastive import logistic_regression_head, sentence_pairs, tune_on_pairs

from .conftest import make_tiny_bert, write_text_table


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def test_pairs_follow_setfit_sampling():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pairs = sentence_pairs(labels, iterations=5, rng=np.random.default_rng(0))
    assert len(pairs) == 2 * 5 * len(labels)
    first, second, target = pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2]
    assert (target == 1).sum() == (target == 0).sum() == 5 * len(labels)
    same = labels[first] == labels[second]
    assert np.array_equal(same, target == 1)  # positives share the class, negatives never do
    assert not np.any((first == second) & (target == 1))  # no example paired with itself
    assert np.array_equal(np.bincount(first, minlength=len(labels)), np.full(len(labels), 10))  # each one R times x2
    again = sentence_pairs(labels, iterations=5, rng=np.random.default_rng(0))
    assert np.array_equal(pairs, again)


def test_single_example_class_pairs_with_itself():
    pairs = sentence_pairs(np.array([0, 1, 1]), iterations=2, rng=np.random.default_rng(1))
    positives = pairs[(pairs[:, 0] == 0) & (pairs[:, 2] == 1)]
    assert len(positives) == 2 and np.all(positives[:, 1] == 0)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_head_is_the_logistic_regression(n_classes):
    """The project's linear head gives scikit-learn's logistic-regression probabilities (SetFit's head)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.arange(60) % n_classes
    x = (rng.normal(size=(60, 12)) + 2 * y[:, None]).astype(np.float32)
    head = logistic_regression_head(x, y, n_classes, c=0.5)
    scale = 1 / np.linalg.norm(x, axis=1).mean()
    expected = LogisticRegression(C=0.5, max_iter=2000).fit(x * scale, y).predict_proba(x * scale)
    np.testing.assert_allclose(head.probabilities(x), expected, atol=1e-5)


def _cosine(backbone, texts):
    with torch.no_grad():
        e = torch.nn.functional.normalize(backbone.eval()(backbone.collate(texts)), dim=1)
    return e @ e.T


def test_pair_stage_pulls_classes_apart(tiny_bert):
    """After the pair stage, sentences of one class are more alike than sentences of different classes."""
    from headstart.backbones import resolve_backbone

    torch.manual_seed(0)
    backbone = resolve_backbone(str(tiny_bert), max_length=32)
    texts = [f"a {w} film" for w in ("wonderful", "great", "lovely", "superb")] + \
            [f"a {w} film" for w in ("terrible", "awful", "dull", "tedious")]
    labels = np.array([1] * 4 + [0] * 4)
    same = labels[:, None] == labels[None, :]

    def gap():
        sim = _cosine(backbone, texts).numpy()
        return sim[same & ~np.eye(8, dtype=bool)].mean() - sim[~same].mean()

    before = gap()
    record = tune_on_pairs(backbone, texts, sentence_pairs(labels, 20, np.random.default_rng(0)),
                           Contrastive(lr=1e-3), "fp32", seed=0)
    assert record["pairs"] == 320 and record["steps"] == 20
    assert record["final_loss"] < record["first_loss"]
    assert gap() > before + 0.05  # 0.17 with this seed; 0.06-0.19 over four random initialisations


def test_contrastive_fit_saves_the_tuned_encoder(tiny_bert, tmp_path):
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=30)
    untuned = headstart.fit(table, str(tiny_bert), "probe", max_length=32, labels_per_class=8, cache=False)
    model = headstart.fit(table, str(tiny_bert), "contrastive", out=tmp_path / "run", max_length=32,
                          labels_per_class=8, lr=1e-3, iterations=10)
    assert model.manifest.strategy.name == "contrastive"
    record = model.manifest.training
    assert record["pair_stage"]["pairs"] == 2 * 10 * 16 and "head_stage" in record
    tuned_weights = model.backbone.state_dict()
    changed = [k for k, v in untuned.backbone.state_dict().items() if not torch.equal(v, tuned_weights[k])]
    assert changed, "the pair stage left the encoder unchanged"
    loaded = headstart.load(tmp_path / "run" / "model")
    assert all(torch.equal(v, loaded.backbone.state_dict()[k]) for k, v in tuned_weights.items())
    texts = ["a wonderful and great film number 1", "a dull and tedious film number 2"]
    np.testing.assert_allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-6)


def test_contrastive_needs_a_text_backbone(shared_image_folder):
    with pytest.raises(HeadstartError, match="contrastive strategy tunes a sentence encoder"):
        headstart.fit(shared_image_folder, "smallcnn", "contrastive", image_size=16)


@pytest.mark.parametrize("setting", [{"iterations": 0}, {"lr": -1.0}, {"batch_size": 0}, {"head_c": 0}])
def test_contrastive_settings_are_checked(setting):
    with pytest.raises(HeadstartError, match=next(iter(setting)).replace("_", "[_-]")):
        Contrastive(**setting)
