"""Class weights for imbalanced training data: the rule, its effect on a probe, its record, the report and the CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, recall_score
from typer.testing import CliRunner

import headstart
from headstart.api import report
from headstart.cli import app
from headstart.data import Dataset
from headstart.errors import SettingsError
from headstart.strategies import FineTune, LoRA, Probe, make_strategy
from headstart.strategies.probe import train_head
from headstart.tasks.class_weights import class_weights

from .conftest import make_image_folder


def _labels(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_balanced_weights_are_n_over_classes_times_count():
    weights, record = class_weights(_labels([60, 30, 10]), 3, "balanced")
    # n = 100, k = 3: 100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10)
    assert torch.allclose(weights, torch.tensor([100 / 180, 100 / 90, 100 / 30]))
    assert record == {"setting": "balanced", "resolved": "balanced", "imbalance_ratio": 6.0, "imbalanced": True,
                      "class_counts": [60, 30, 10], "weights": [0.555556, 1.111111, 3.333333]}


def test_none_leaves_the_loss_unweighted_even_when_imbalanced():
    weights, record = class_weights(_labels([100, 2]), 2, "none")
    assert weights is None and record["resolved"] == "none" and record["imbalance_ratio"] == 50.0


def test_auto_weights_only_when_the_largest_class_is_more_than_5x_the_smallest(caplog):
    with caplog.at_level(logging.INFO, logger="headstart"):
        at_threshold, record = class_weights(_labels([50, 20, 10]), 3, "auto")
    assert at_threshold is None and record["resolved"] == "none" and not record["imbalanced"]
    assert "no class weights" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="headstart"):
        above, record = class_weights(_labels([51, 20, 10]), 3, "auto")
    assert above is not None and record["resolved"] == "balanced" and record["imbalanced"]
    assert "classes imbalanced (largest 5.1x the smallest): class weights balanced (--class-weight none to turn off)" \
        in caplog.text


def _gaussians(counts: list[int], rng: np.random.Generator, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian 'embeddings', one mean per class 1.5 apart along its own axis."""
    x = np.concatenate([rng.normal(0, 1, (n, dim)) + 1.5 * np.eye(dim)[c] for c, n in enumerate(counts)])
    return x.astype(np.float32), _labels(counts).astype(np.int64)


def test_balanced_weights_raise_the_rare_class_recall_and_macro_f1_of_a_probe():
    rng = np.random.default_rng(0)
    train_x, train_y = _gaussians([200, 200, 6], rng)
    val_x, val_y = _gaussians([60, 60, 2], rng)
    test_x, test_y = _gaussians([300, 300, 300], rng)  # balanced: every class counts the same in the scores
    scores = {}
    for choice in ("none", "balanced"):
        weights, _ = class_weights(train_y, 3, choice)
        train, val = (Dataset("text", [""] * len(y), y, ["a", "b", "c"]) for y in (train_y, val_y))
        head, _ = train_head(train_x, train, val_x, val, Probe(), seed=0, class_weight=weights)
        with torch.no_grad():
            predicted = head(torch.from_numpy(test_x)).argmax(1).numpy()
        scores[choice] = (recall_score(test_y, predicted, average=None)[2], f1_score(test_y, predicted, average="macro"))
    assert scores["balanced"][0] > scores["none"][0] + 0.2, scores
    assert scores["balanced"][1] > scores["none"][1] + 0.05, scores


def test_every_training_strategy_takes_the_setting_and_refuses_a_bad_value():
    for cls in (Probe, FineTune, LoRA):
        assert cls().class_weight == "auto" and cls(class_weight="none").class_weight == "none"
    assert make_strategy("auto", {"class_weight": "balanced"}).settings() == {"class_weight": "balanced"}
    with pytest.raises(SettingsError, match=r"class_weight \(--class-weight\) must be one of auto, balanced, none"):
        Probe(class_weight="equal")


def _imbalanced_images(root):
    """60 red images, 8 green, 8 blue: after the validation and test splits, about 9x as many red to train on."""
    make_image_folder(root, per_class=8, size=20)
    return make_image_folder(root, classes=("red",), per_class=60, size=20, seed=1)


def test_probe_records_the_choice_and_the_report_says_the_data_are_imbalanced(tmp_path):
    runner = CliRunner()
    data = _imbalanced_images(tmp_path / "images")
    out = tmp_path / "run"
    result = runner.invoke(app, ["fit", str(data), "--image-size", "32", "--out", str(out), "--no-calibrate"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "model" / "headstart.json").read_text())
    record = manifest["training"]["class_weight"]
    assert record["setting"] == "auto" and record["resolved"] == "balanced" and record["imbalance_ratio"] > 5
    assert manifest["strategy"]["settings"]["class_weight"] == "auto"
    page = report(out).read_text()
    overview = page[page.index('id="overview"'):page.index('id="metrics"')]
    assert "class balance" in overview and "imbalanced" in overview and "balanced class weights" in overview


def test_finetune_trains_with_the_weights_and_records_them(tmp_path):
    data = _imbalanced_images(tmp_path / "images")
    model = headstart.fit(data, "smallcnn", "finetune", out=tmp_path / "run", epochs=1, class_weight="balanced",
                          cache=False, calibrate=False)
    record = model.manifest.training["class_weight"]
    assert record["setting"] == "balanced" and record["resolved"] == "balanced" and record["imbalanced"]
    assert model.manifest.strategy.settings["class_weight"] == "balanced"


def test_cli_refuses_a_bad_class_weight_in_one_line(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=4, size=16)
    result = CliRunner().invoke(app, ["fit", str(data), "--class-weight", "equal", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "class_weight (--class-weight) must be one of auto, balanced, none" in errors[0]
    assert "Traceback" not in result.output
