"""Temperature scaling: fitted on validation, stored in the manifest, applied everywhere, accuracy unchanged;
old models without a temperature load and behave as before."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.evaluation.calibration import choose_temperature, fit_temperature, softmax, uncalibrated
from headstart.evaluation.metrics import brier_score, expected_calibration_error, negative_log_likelihood


def _overconfident(n: int = 20000, classes: int = 5, true_t: float = 2.5, seed: int = 0):
    """Logits whose labels are drawn from softmax(z / true_t): the right temperature is true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 4, (n, classes))
    p = softmax(z / true_t)
    labels = (rng.random((n, 1)) > p.cumsum(1)).sum(1)  # one draw per row from its distribution
    return z, labels


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    z, labels = _overconfident()
    t = fit_temperature(z, labels)
    assert t == pytest.approx(2.5, rel=0.05)
    before, after = softmax(z), softmax(z / t)
    assert expected_calibration_error(after, labels) < 0.5 * expected_calibration_error(before, labels)
    assert negative_log_likelihood(after, labels) < negative_log_likelihood(before, labels)
    assert (after.argmax(1) == before.argmax(1)).all()


def test_fit_temperature_stays_in_bounds_when_every_item_is_right():
    z = np.array([[10.0, 0.0], [0.0, 10.0]] * 20)
    t = fit_temperature(z, np.array([0, 1] * 20))
    assert 0.05 <= t < 1


def test_ece_equals_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    z, labels = _overconfident(n=3000, seed=1)
    probs = softmax(z).astype(np.float32)
    ours = expected_calibration_error(probs, labels, bins=15)
    theirs = multiclass_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), num_classes=5, n_bins=15,
                                          norm="l1")
    assert ours == pytest.approx(float(theirs), abs=1e-5)


def test_nll_and_brier_on_known_values():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    labels = np.array([0, 1])
    assert negative_log_likelihood(probs, labels) == pytest.approx((np.log(2) + np.log(10)) / 2)
    assert brier_score(probs, labels) == pytest.approx((0.25 + 0.25 + 0.81 + 0.81) / 2)


def test_a_validation_split_that_cannot_support_a_temperature_leaves_it_at_one():
    """Too few held-out items, or none misclassified, would fit T to noise (all right: T falls to its lower
    bound and every score goes to 0 or 1): the head keeps T = 1 and the record says why; enough items with some
    mistakes get a fitted temperature."""
    from headstart.heads import LinearHead

    z, labels = _overconfident(n=400, classes=3)
    head = LinearHead(3, 3)
    with torch.no_grad():
        head.layers[1].weight.copy_(torch.eye(3))
        head.layers[1].bias.zero_()
    head.standardize.scale.fill_(1.0)
    x = z.astype(np.float32)
    few = head.calibrate(x[:20], labels[:20])
    assert few["method"] == "none" and "20 validation items are too few" in few["reason"]
    assert head.config["temperature"] == 1.0
    right = np.argmax(x, 1)[:200]
    perfect = head.calibrate(x[:200], right)
    assert perfect["method"] == "none" and "no mistakes" in perfect["reason"] and head.config["temperature"] == 1.0
    fitted = head.calibrate(x, labels)
    assert fitted["method"] == "temperature" and fitted["temperature"] == pytest.approx(2.5, rel=0.25)


def _identity_head(classes: int = 5):
    """A linear head whose logits are its inputs: calibrating it calibrates the given logits."""
    from headstart.heads import LinearHead

    head = LinearHead(classes, classes)
    with torch.no_grad():
        head.layers[1].weight.copy_(torch.eye(classes))
        head.layers[1].bias.zero_()
    head.standardize.scale.fill_(1.0)
    return head


def test_a_temperature_that_generalises_is_kept_and_lowers_ece():
    """Over-confident logits (labels drawn at T = 2.5): the temperature fitted on K-1 folds lowers the NLL of the
    held-out fold well beyond its noise, so it is kept and the record carries the test's numbers."""
    z, labels = _overconfident(n=500)
    record = _identity_head().calibrate(z.astype(np.float32), labels, seed=3)
    acceptance = record["acceptance"]
    assert record["method"] == "temperature" and "reason" not in record
    assert record["temperature"] == pytest.approx(acceptance["fitted_temperature"], rel=1e-5)
    assert record["temperature"] == pytest.approx(2.5, rel=0.25)
    assert acceptance["folds"] == 5 and acceptance["seed"] == 3 and len(acceptance["fold_temperatures"]) == 5
    assert acceptance["nll_gain"] > 3 * acceptance["nll_gain_se"] > 0
    assert record["ece_after"] < 0.5 * record["ece_before"] and record["nll_after"] < record["nll_before"]


def test_a_temperature_fitted_to_noise_on_calibrated_logits_is_dropped_with_its_reason():
    """Logits that are already calibrated (labels drawn at T = 1): a temperature fitted on them only fits noise,
    so the held-out gain does not beat its standard error, T stays 1 and the reason gives the numbers; the same
    seed gives the same decision."""
    z, labels = _overconfident(n=300, true_t=1.0, seed=4)
    head = _identity_head()
    record = head.calibrate(z.astype(np.float32), labels, seed=0)
    acceptance = record["acceptance"]
    assert record["method"] == "none" and record["temperature"] == 1.0 and head.config["temperature"] == 1.0
    assert acceptance["fitted_temperature"] != 1.0 and not acceptance["nll_gain"] > acceptance["nll_gain_se"]
    assert "did not improve held-out NLL beyond noise" in record["reason"] and "5-fold" in record["reason"]
    assert f"{acceptance['fitted_temperature']:.2f}" in record["reason"]
    assert record["nll_after"] == record["nll_before"] and record["ece_after"] == record["ece_before"]
    assert head.calibrate(z.astype(np.float32), labels, seed=0) == record


def test_cross_validated_acceptance_drops_noise_and_keeps_real_over_confidence_across_draws():
    """Over ten draws of 200 validation items: calibrated logits keep T = 1 in most, over-confident ones (T = 2)
    are calibrated in all."""
    def draw(true_t, seed):
        return _overconfident(n=200, true_t=true_t, seed=seed)

    dropped = sum(choose_temperature(*draw(1.0, s), seed=s).reason is not None for s in range(10))
    kept = sum(choose_temperature(*draw(2.0, s), seed=s).reason is None for s in range(10))
    assert dropped >= 8 and kept == 10


def test_uncalibrated_probabilities_are_recovered_from_calibrated_ones():
    z, _ = _overconfident(n=200)
    np.testing.assert_allclose(uncalibrated(softmax(z / 3.0), 3.0), softmax(z), atol=1e-9)


def _strip_calibration(folder, target):
    """A copy of a model folder as headstart wrote it before temperature scaling (schema 2, no temperature)."""
    shutil.copytree(folder, target)
    manifest = json.loads((target / "headstart.json").read_text())
    manifest["format_version"] = 2
    del manifest["head"]["temperature"], manifest["calibration"]
    (target / "headstart.json").write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def runs(small_cnn_run, tmp_path_factory):
    """The shared smallcnn finetune (calibrated by `fit`, the default) and the same model without its temperature,
    as a model saved before calibration existed; the images it was trained on."""
    old = _strip_calibration(small_cnn_run / "model", tmp_path_factory.mktemp("old") / "model")
    files = sorted((small_cnn_run.parent / "images").rglob("*.png"))[::30]
    return headstart.load(small_cnn_run / "model"), headstart.load(old), files


def test_fit_calibrates_on_validation_and_accuracy_is_unchanged(runs, small_cnn_run):
    calibrated, old, files = runs
    record = calibrated.manifest.calibration
    assert record["method"] == "temperature" and record["n"] == calibrated.manifest.data.splits["val"] == 500
    assert calibrated.temperature == record["temperature"] != 1.0
    assert record["nll_after"] <= record["nll_before"] + 1e-9 and record["ece_after"] < record["ece_before"]
    assert calibrated.metrics["temperature"] == calibrated.temperature
    assert calibrated.metrics["ece_uncalibrated"] != calibrated.metrics["ece"]
    cal_probs, old_probs = calibrated.predict_proba(files), old.predict_proba(files)
    assert (cal_probs.argmax(1) == old_probs.argmax(1)).all()
    np.testing.assert_allclose(cal_probs, softmax(np.log(old_probs) / calibrated.temperature), atol=1e-4)
    np.testing.assert_allclose(uncalibrated(cal_probs, calibrated.temperature), old_probs, atol=1e-4)


def test_evaluate_json_reports_calibration_metrics_and_accuracy_is_that_of_the_raw_model(runs, small_cnn_run):
    _, old, _ = runs
    images = str(small_cnn_run.parent / "images")
    result = CliRunner().invoke(app, ["evaluate", str(small_cnn_run / "model"), images, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ece", "ece_uncalibrated", "nll", "brier", "temperature"} <= set(metrics)
    before = old.evaluate(images)  # a model saved before calibration: as before, ECE is the raw softmax's
    assert before["temperature"] == 1.0 and before["ece"] == before["ece_uncalibrated"]
    assert metrics["accuracy"] == before["accuracy"] and metrics["confusion_matrix"] == before["confusion_matrix"]
    assert metrics["ece_uncalibrated"] == pytest.approx(before["ece"], abs=1e-3)
    assert metrics["nll"] < before["nll"]


def test_a_model_saved_before_calibration_loads_with_temperature_1(runs):
    _, old, _ = runs
    assert old.temperature == 1.0 and old.manifest.format_version == 3 and old.manifest.calibration is None


def test_calibrate_an_existing_model_and_save_it(runs, small_cnn_run, tmp_path):
    from headstart.data import load_data

    _, old, _ = runs
    data = load_data(small_cnn_run.parent / "images").train
    record = old.calibrate(data.subset(np.arange(0, len(data), 3)))
    assert record["temperature"] == old.temperature != 1.0 and record["nll_after"] <= record["nll_before"]
    old.save(tmp_path / "recalibrated")
    assert headstart.load(tmp_path / "recalibrated").temperature == pytest.approx(record["temperature"])


def test_fit_no_calibrate_keeps_the_raw_softmax(text_table, tmp_path):
    from .conftest import make_tiny_bert

    bert = make_tiny_bert(tmp_path / "tiny-bert")
    model = headstart.fit(text_table, str(bert), "probe", calibrate=False, max_length=16, cache=False)
    assert model.temperature == 1.0 and model.manifest.calibration is None
    assert model.metrics["ece"] == model.metrics["ece_uncalibrated"]
