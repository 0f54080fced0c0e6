"""Backbone selection: LogME against an independent evidence maximisation and its invariances, kNN accuracy,
and `select` ranking real backbones, sharing the embedding cache with `fit`, and its command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.errors import SettingsError
from headstart.evaluation.knn import knn_accuracy
from headstart.evaluation.logme import logme

from .conftest import make_tiny_bert


def _clusters(n: int, d: int, separation: float, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features whose first `classes` dimensions hold a class signal of strength `separation`."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = rng.standard_normal((n, d))
    features[np.arange(n), labels] += separation
    return features, labels


def _direct_evidence(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME from its definition, independently of the implementation: for each class's one-hot column y, the
    largest log N(y; 0, F F^T / alpha + I / beta) / N over (alpha, beta), found by Nelder-Mead from three starts."""
    from scipy.optimize import minimize
    from scipy.stats import multivariate_normal

    n = len(features)
    gram = features @ features.T
    per_class = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)

        def negative(log_ab, y=y):
            alpha, beta = np.exp(log_ab)
            return -multivariate_normal(np.zeros(n), gram / alpha + np.eye(n) / beta).logpdf(y)

        runs = [minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12,
                                                                          "maxiter": 8000})
                for start in ([0.0, 0.0], [5.0, 1.0], [-3.0, 2.0])]
        per_class.append(-min(r.fun for r in runs) / n)
    return float(np.mean(per_class))


def _mackay_fixed_point(features: np.ndarray, labels: np.ndarray, steps: int = 2000) -> float:
    """The LogME paper's Algorithm 1 (MacKay's updates of alpha and beta on the eigendecomposition of F^T F),
    written plainly and run to convergence."""
    n, d = features.shape
    sigma, v = np.linalg.eigh(features.T @ features)
    sigma = np.clip(sigma, 0, None)
    scores = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)
        projected = v.T @ (features.T @ y)
        alpha, beta = 1.0, 1.0
        for _ in range(steps):
            m = v @ (beta * projected / (alpha + beta * sigma))
            gamma = (beta * sigma / (alpha + beta * sigma)).sum()
            alpha, beta = gamma / (m @ m), (n - gamma) / ((y - features @ m) ** 2).sum()
        m = v @ (beta * projected / (alpha + beta * sigma))
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.log(alpha + beta * sigma).sum()
                    - beta / 2 * ((y - features @ m) ** 2).sum() - alpha / 2 * m @ m - n / 2 * np.log(2 * np.pi))
        scores.append(evidence / n)
    return float(np.mean(scores))


@pytest.mark.parametrize(("n", "d", "separation"), [(60, 8, 1.5), (30, 50, 2.0), (40, 40, 0.3)])
def test_logme_is_the_maximised_evidence(n, d, separation):
    """More items than dimensions, fewer, and a weak signal (where the best prior is strong)."""
    features, labels = _clusters(n, d, separation)
    assert logme(features, labels) == pytest.approx(_direct_evidence(features, labels), abs=1e-5)


def test_logme_agrees_with_the_papers_fixed_point_iteration():
    features, labels = _clusters(200, 12, 2.0)
    assert logme(features, labels) == pytest.approx(_mackay_fixed_point(features, labels), abs=1e-6)


def test_logme_is_unchanged_by_scaling_rotating_permuting_and_renaming():
    features, labels = _clusters(120, 16, 1.5, classes=4)
    score = logme(features, labels)
    rng = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    order = rng.permutation(120)
    assert logme(1000 * features, labels) == pytest.approx(score, abs=1e-6)
    assert logme(features @ rotation, labels) == pytest.approx(score, abs=1e-6)
    assert logme(features[order], labels[order]) == pytest.approx(score, abs=1e-6)
    assert logme(features, 7 - labels) == pytest.approx(score, abs=1e-6)


def test_better_separated_features_score_higher():
    scores = [logme(*_clusters(300, 64, s, classes=5)) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert scores == sorted(scores) and scores[-1] - scores[0] > 0.3
    n_below_d = [logme(*_clusters(100, 300, s, classes=5)) for s in (0.0, 1.0, 3.0)]
    assert n_below_d == sorted(n_below_d)
    features, labels = _clusters(300, 64, 0.0, classes=5)
    dead = logme(np.zeros_like(features), labels)  # no information at all: the floor, not an error
    assert np.isfinite(dead) and dead <= scores[0] + 1e-3


def test_logme_refuses_bad_features():
    with pytest.raises(ValueError, match="NaN"):
        logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="N labels"):
        logme(np.ones((4, 2)), np.array([0, 1]))


def test_knn_accuracy_leaves_each_item_out():
    angles = np.linspace(0, np.pi, 40, endpoint=False)  # neighbours along an arc alternate in label
    points, labels = np.stack([np.cos(angles), np.sin(angles)], axis=1), np.arange(40) % 2
    assert knn_accuracy(points, labels, k=1) == 0.0  # an item counted as its own neighbour would give 1.0
    features, y = _clusters(300, 16, 4.0)
    assert knn_accuracy(features, y) > 0.9 > 0.5 > knn_accuracy(*_clusters(300, 16, 0.0))


@pytest.mark.slow
def test_select_fills_the_cache_that_fit_reads(image_folder):
    best = headstart.select(image_folder, ["efficientnet_lite0"], per_class=12, image_size=64).best
    assert best.items == 36 and best.embedding_dim == 1280 and best.cache_misses == 36
    assert best.knn_accuracy > 0.9 and best.seconds > 0 and best.ms_per_item > 0
    model = headstart.fit(image_folder, "efficientnet_lite0", image_size=64)
    test = model.manifest.data.splits["test"]  # embedded in fp32 for the metrics; select and training use auto
    assert model.manifest.embedding_cache == {"hits": 36 - test, "misses": test}  # train and val from select
    again = headstart.select(image_folder, ["efficientnet_lite0"], per_class=12, image_size=64).best
    assert again.cache_hits == 36 and again.ms_per_item is None
    assert again.logme == pytest.approx(best.logme, abs=1e-9)


@pytest.mark.slow
def test_select_text_prefers_a_sentence_encoder_to_random_weights(text_table, tmp_path):
    random_bert = make_tiny_bert(tmp_path / "random-bert")
    result = headstart.select(text_table, [str(random_bert), "minilm"], per_class=20, max_length=32)
    assert [c.backbone for c in result.candidates] == ["minilm", str(random_bert)]
    assert result.modality == "text" and result.items == 40 and result.best.knn_accuracy > 0.9


@pytest.mark.slow
def test_select_command_ranks_imagenet_features_above_random_ones_on_real_digits(image_folder):
    runner = CliRunner()
    result = runner.invoke(app, ["select", "digits", "--backbones", "smallcnn,efficientnet_lite0", "--per-class", "10",
                                 "--image-size", "64", "--json"])
    assert result.exit_code == 0, result.output
    ranking = json.loads(result.stdout)
    ranked = ranking["ranking"]
    assert ranking["best"] == "efficientnet_lite0" and [r["backbone"] for r in ranked] == ["efficientnet_lite0", "smallcnn"]
    assert ranked[0]["logme"] - ranked[1]["logme"] > 0.05 and [r["rank"] for r in ranked] == [1, 2]
    assert ranking["items"] == 100 and ranking["classes"] == 10 and ranking["modality"] == "image"
    assert ranked[1]["cache_hits"] == 0 and ranked[1]["cache_misses"] == 100  # random weights are never cached
    assert {"logme", "knn_accuracy", "seconds", "ms_per_item", "embedding_dim"} <= set(ranked[0])
    table = runner.invoke(app, ["select", str(image_folder), "--backbones", "smallcnn", "--per-class", "4"])
    assert table.exit_code == 0 and "LogME" in table.stdout and "best: smallcnn" in table.stdout


def test_select_errors_are_one_line(image_folder):
    with pytest.raises(SettingsError, match="at least one backbone"):
        headstart.select(image_folder, [" "])
    with pytest.raises(SettingsError, match=r"per_class \(--per-class\)"):
        headstart.select(image_folder, ["smallcnn"], per_class=1)
    result = CliRunner().invoke(app, ["select", str(image_folder), "--backbones", "resnet9000"])
    assert result.exit_code == 2 and "unknown backbone 'resnet9000'" in result.output
    result = CliRunner().invoke(app, ["select", str(image_folder), "--backbones", "minilm"])
    assert result.exit_code == 2 and "error:" in result.output
