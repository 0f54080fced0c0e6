"""Honest numbers (issue 20): `evaluate` never scores items the model was fitted on, and fit's test metrics,
`evaluate` and `report` give one set of numbers, at one stated precision, for the same items."""

from __future__ import annotations

import json
import logging
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import headstart
from headstart._util import default_device, resolve_precision
from headstart.api import report
from headstart.cli import app
from headstart.data import load_data
from headstart.errors import DataError, SettingsError

from .conftest import make_image_folder

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def json_line(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """An efficientnet_lite0 probe (the quickstart's transfer model) on 60 colour images, trained at the default
    precision (auto) with the embedding cache on: the test split's embeddings go through the cache too."""
    root = tmp_path_factory.mktemp("numbers")
    images = make_image_folder(root / "images", per_class=20, size=24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEADSTART_CACHE", str(root / "cache"))
        model = headstart.fit(images, "efficientnet_lite0", "probe", out=root / "run", image_size=32)
    return model, root / "run", images


@pytest.fixture(scope="module")
def probe_report(probe_run) -> str:
    _, run_dir, _ = probe_run
    return report(run_dir).read_text()


SCORES = ("n", "accuracy", "macro_f1", "confusion_matrix", "ece", "nll", "brier")


def test_fit_evaluate_and_report_give_one_set_of_numbers_for_the_recorded_test_split(probe_run, probe_report):
    model, run_dir, images = probe_run
    fitted = model.metrics
    assert fitted["n"] == model.manifest.data.splits["test"] == 12
    result = run("evaluate", run_dir / "model", images, "--json")  # the data it was trained on
    assert result.exit_code == 0, result.output
    evaluated = json_line(result)
    assert evaluated["evaluated_on"] == f"the recorded test split of {images}"
    assert {k: evaluated[k] for k in SCORES} == {k: fitted[k] for k in SCORES}
    assert evaluated["fitted_items_left_out"] == 0
    page = probe_report
    assert f"accuracy {fitted['accuracy']:.1%} on {fitted['n']} items of the recorded test split of {images}" in page
    assert re.search(rf"<td>accuracy</td><td>{fitted['accuracy']:.4f}</td>", page)


def test_evaluate_on_the_training_source_through_another_spelling_of_its_path(probe_run, monkeypatch):
    model, run_dir, images = probe_run
    monkeypatch.chdir(images.parent)
    metrics = headstart.evaluate(run_dir / "model", f"./{images.name}/")
    assert metrics["evaluated_on"].startswith("the recorded test split of") and metrics["n"] == 12
    assert metrics["accuracy"] == model.metrics["accuracy"]


def test_data_holding_training_items_are_scored_without_them_with_a_counted_warning(probe_run, tmp_path, caplog):
    """A copy of the training folder under another name, with new images added: the items the model was fitted
    on (train + validation, by content) are left out, the test items and the new ones are scored."""
    model, run_dir, images = probe_run
    copy = shutil.copytree(images, tmp_path / "copy")
    make_image_folder(tmp_path / "new", per_class=3, size=24, seed=7)
    for png in (tmp_path / "new").rglob("*.png"):
        shutil.copy(png, copy / png.parent.name / f"new-{png.name}")
    fitted_count = model.manifest.data.splits["train"] + model.manifest.data.splits["val"]
    with caplog.at_level(logging.WARNING, logger="headstart"):
        metrics = headstart.evaluate(run_dir / "model", copy)
    assert metrics["fitted_items_left_out"] == fitted_count == 48
    assert metrics["n"] == 12 + 9 and metrics["evaluated_on"] == str(copy)
    assert f"{fitted_count} of 69 items were used to fit this model" in caplog.text
    in_memory = headstart.load(run_dir / "model").evaluate(load_data(copy).train)
    assert {k: in_memory[k] for k in SCORES} == {k: metrics[k] for k in SCORES}


def test_data_made_only_of_training_items_are_refused_in_one_line(probe_run, tmp_path):
    model, run_dir, _images = probe_run
    train = model.recorded_splits().train
    only = tmp_path / "seen"
    for item, label in zip(train.items, train.labels):
        (only / train.classes[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(item, only / train.classes[label] / item.name)
    with pytest.raises(DataError, match="were used to fit this model"):
        headstart.evaluate(run_dir / "model", only)
    result = run("evaluate", run_dir / "model", only)
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_a_model_saved_before_the_item_record_still_evaluates(probe_run, tmp_path, caplog):
    """Without items.safetensors: the training source still gives the recorded test split; other data cannot be
    checked for training items, and a warning says so."""
    model, run_dir, images = probe_run
    old = shutil.copytree(run_dir / "model", tmp_path / "old")
    (old / "items.safetensors").unlink()
    assert headstart.load(old).item_digests is None
    same = headstart.evaluate(old, images)
    assert same["n"] == 12 and same["accuracy"] == model.metrics["accuracy"]
    with caplog.at_level(logging.WARNING, logger="headstart"):
        other = headstart.evaluate(old, shutil.copytree(images, tmp_path / "copy"))
    assert other["n"] == 60 and "without a record of its training items" in caplog.text


def test_a_damaged_item_record_is_a_one_line_error(probe_run, tmp_path):
    _, run_dir, images = probe_run
    damaged = shutil.copytree(run_dir / "model", tmp_path / "damaged")
    (damaged / "items.safetensors").write_bytes(b"\x00garbage")
    result = run("evaluate", damaged, images)
    assert result.exit_code == 2 and "items.safetensors cannot be read" in result.output


def test_the_precision_is_recorded_resolved_and_stated_everywhere(probe_run, probe_report):
    _model, run_dir, images = probe_run
    manifest = json.loads((run_dir / "model" / "headstart.json").read_text())
    here = resolve_precision("auto", default_device())
    assert manifest["precision"] == "auto" and manifest["training_precision"] == here
    assert manifest["evaluation_precision"] == "fp32" and manifest["metrics"]["evaluation_precision"] == "fp32"
    assert f"training auto ({here} on the training machine); evaluation fp32" in probe_report
    result = run("evaluate", run_dir / "model", images)
    assert result.exit_code == 0 and re.search(r"precision\s*│\s*fp32", result.stdout)


def test_the_server_metadata_states_the_precision_of_its_metrics_and_of_its_predictions(probe_run):
    from headstart.serving import load_for_serving

    _, run_dir, _ = probe_run
    _, _, meta = load_for_serving(run_dir / "model")
    assert meta["evaluation_precision"] == meta["metrics"]["evaluation_precision"] == "fp32"
    assert meta["precision"] == "fp32"  # the server predicts in its metrics' precision unless told otherwise


def test_evaluate_and_report_take_a_precision(probe_run, tmp_path):
    _model, run_dir, images = probe_run
    bf16 = headstart.evaluate(run_dir / "model", images, precision="bf16")
    assert bf16["evaluation_precision"] == "bf16" and bf16["n"] == 12
    page = report(run_dir, out=tmp_path / "bf16.html", precision="bf16").read_text()
    assert "evaluation bf16" in page and "(bf16)" in page
    for command in (["evaluate", run_dir / "model", images], ["report", run_dir],
                    ["predict", run_dir / "model", images / "red" / "0.png"]):
        result = run(*command, "--precision", "fp8")
        assert result.exit_code == 2 and "--precision must be one of auto, fp32, bf16" in result.output
    with pytest.raises(SettingsError, match="must be one of auto, fp32, bf16"):
        headstart.load(run_dir / "model", precision="fp8")


def test_predictions_in_fp32_are_exactly_those_behind_the_metrics(probe_run):
    model, run_dir, images = probe_run
    evaluation = headstart.load(run_dir / "model").evaluation(images)
    fp32 = headstart.load(run_dir / "model", precision="fp32")
    np.testing.assert_array_equal(fp32.predict_proba(evaluation.data.items), evaluation.probabilities)
    default = headstart.load(run_dir / "model")  # by default too: the metrics' precision
    assert default.precision == "fp32"
    np.testing.assert_array_equal(default.predict_proba(evaluation.data.items), evaluation.probabilities)
    result = run("predict", run_dir / "model", *evaluation.data.items[:3], "--precision", "fp32", "--top-k", "1")
    assert result.exit_code == 0, result.output
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert labels == [model.classes[i] for i in evaluation.probabilities[:3].argmax(1)]


def test_fit_tests_in_fp32_even_when_it_trains_in_bfloat16(tmp_path):
    """The test metrics do not follow the training precision: a bf16 fit records bf16 training and fp32 metrics,
    which `evaluate` reproduces exactly."""
    images = make_image_folder(tmp_path / "images", per_class=8, size=16)
    model = headstart.fit(images, "smallcnn", "finetune", out=tmp_path / "run", epochs=1, precision="bf16",
                          cache=False)
    assert model.manifest.training_precision == "bf16" and model.manifest.evaluation_precision == "fp32"
    again = headstart.evaluate(tmp_path / "run" / "model", images)
    assert {k: again[k] for k in SCORES} == {k: model.metrics[k] for k in SCORES}
    assert again["evaluation_precision"] == "fp32"


def test_the_quickstart_evaluate_command_scores_the_digits_test_split(tmp_path):
    """The command the quickstart suggests (`evaluate MODEL digits`) gives the quickstart's own held-out number:
    the recorded 360-image test split, never the 1,797 images it trained on."""
    model = headstart.fit("digits", "smallcnn", "finetune", out=tmp_path / "run", labels_per_class=5, epochs=1,
                          val_size=30)
    result = run("evaluate", tmp_path / "run" / "model", "digits", "--json")
    assert result.exit_code == 0, result.output
    metrics = json_line(result)
    assert metrics["n"] == 360 == model.metrics["n"] and metrics["accuracy"] == model.metrics["accuracy"]
    assert metrics["evaluated_on"] == "the recorded test split of digits"


def test_items_calibrated_on_after_training_are_left_out_of_evaluate_as_fitted(probe_run, tmp_path, caplog):
    _model, run_dir, _images = probe_run
    loaded = headstart.load(run_dir / "model")
    test = loaded.recorded_splits().test
    loaded.calibrate(test.subset(range(4)))  # calibrating on test items makes them fitted items
    with caplog.at_level(logging.WARNING, logger="headstart"):
        result = loaded.evaluate(test)
    assert result["n"] == len(test) - 4 and result["fitted_items_left_out"] == 4


def test_fit_warns_when_test_items_duplicate_training_items(tmp_path, caplog):
    images = make_image_folder(tmp_path / "images", per_class=10, size=16)
    with caplog.at_level(logging.WARNING, logger="headstart"):
        headstart.fit(images, "efficientnet_lite0", "probe", image_size=32, test=images, calibrate=False, epochs=1)
    assert "also in the training or validation data (same content)" in caplog.text
