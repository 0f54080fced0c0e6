"""Where each split comes from: the split plan `fit` logs, the warning for a small test split, a test/ folder
beside train/, and held-out test data given apart (`fit --test`, `test=`) that report and export find again."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

import headstart
from headstart.api import prepare_splits
from headstart.cli import app
from headstart.data import load_data, make_splits, read_test_data
from headstart.errors import DataError

from .conftest import make_image_folder, write_text_table


def test_the_plan_names_the_folder_or_cut_of_each_split(tmp_path):
    whole = make_image_folder(tmp_path / "whole", per_class=10)
    plan = make_splits(load_data(whole), val_size=0.1, test_size=0.2, seed=3).plan()
    assert plan == [f"train: 21 items from {whole} (what the test and val cuts left)",
                    f"val: 3 items from {whole} (a stratified 10% cut of what the test cut left, seed 3)",
                    f"test: 6 items from {whole} (a stratified 20% cut, seed 3)"]

    make_image_folder(tmp_path / "d" / "train", per_class=10)
    make_image_folder(tmp_path / "d" / "val", per_class=4, seed=1)
    plan = make_splits(load_data(tmp_path / "d"), test_size=5, labels_per_class=2).plan()
    assert plan == [f"train: 6 items from {tmp_path / 'd' / 'train'} (what the test cut left), 2 per class (seed 0)",
                    f"val: 6 items from {tmp_path / 'd' / 'val'}, at most 2 per class",
                    f"test: 5 items from {tmp_path / 'd' / 'train'} (a stratified 5-item cut, seed 0)"]

    make_image_folder(tmp_path / "d" / "test", per_class=3, seed=2)
    splits = make_splits(load_data(tmp_path / "d"))
    assert splits.plan()[2] == f"test: 9 items from {tmp_path / 'd' / 'test'}"
    assert splits.origins()["train"] == str(tmp_path / "d" / "train")  # train/, val/ and test/: nothing cut


def test_test_data_given_apart_replace_the_data_own_test_split_with_the_training_classes(tmp_path, caplog):
    data = tmp_path / "d"
    make_image_folder(data / "train", per_class=10)
    make_image_folder(data / "test", per_class=2, seed=1)
    holdout = make_image_folder(tmp_path / "holdout", classes=("blue", "red"), per_class=4, seed=2)
    with caplog.at_level(logging.WARNING, logger="headstart"):
        splits = prepare_splits(data, None, None, 0.1, 0.2, None, 0, test=holdout)
    assert "the data define their own test split (6 items" in caplog.text
    assert len(splits.test) == 8 and splits.test.classes == ["blue", "green", "red"]
    assert set(splits.test.labels) == {0, 2}  # labeled with the training classes' indices
    assert splits.plan()[2] == f"test: 8 items from {holdout} (the test data given apart)"
    assert len(splits.train) + len(splits.val) == 30  # nothing cut from train/ for testing

    with pytest.raises(DataError, match="classes not seen in training: purple"):
        read_test_data(make_image_folder(tmp_path / "other", classes=("red", "purple"), per_class=2),
                       splits.classes, "image")
    with pytest.raises(DataError, match=r"test data .*reviews\.csv"):
        read_test_data(write_text_table(tmp_path / "reviews.csv", 4), splits.classes, "image")


def test_fit_logs_the_split_plan_and_warns_when_the_test_split_is_small(tmp_path, caplog):
    """train/ and val/ folders without test/: the test split is cut from train/, and the log says so before
    training; 9 test items are far too few, and the warning says how wide the interval is and what to do."""
    data = tmp_path / "bees"
    make_image_folder(data / "train", per_class=15)
    make_image_folder(data / "val", per_class=4, seed=1)
    with caplog.at_level(logging.INFO, logger="headstart"):
        model = headstart.fit(data, "efficientnet_lite0", "probe", image_size=32, epochs=2)
    plan = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("split plan"))
    assert f"test: 9 items from {data / 'train'} (a stratified 20% cut, seed 0)" in plan
    assert f"val: 12 items from {data / 'val'}" in plan and f"train: 36 items from {data / 'train'}" in plan
    warning = next(r for r in caplog.records if "test split has only" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert "only 9 items" in warning.getMessage() and "±20 points" in warning.getMessage()  # 1.96 sqrt(.09 / 9)
    assert "--test DATA" in warning.getMessage() and "test/ folder" in warning.getMessage()
    assert caplog.text.index("split plan") < caplog.text.index("calibrat")  # before training, not after
    assert model.manifest.data.origins["test"].endswith("(a stratified 20% cut, seed 0)")
    assert model.manifest.data.test_source is None


def test_fit_with_test_data_given_apart_records_them_for_report_and_export(tmp_path, monkeypatch):
    """`fit DATA --test HOLDOUT` tests on HOLDOUT (102 items: no warning) and cuts nothing from DATA for testing;
    the manifest records HOLDOUT, so `report` evaluates on it again and `recorded_splits` (export, distill)
    rebuilds the same validation split."""
    monkeypatch.chdir(tmp_path)
    data = make_image_folder(tmp_path / "colours", per_class=10)
    holdout = make_image_folder(tmp_path / "holdout", per_class=34, seed=5)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", str(data), "--test", str(holdout), "--image-size", "32", "--epochs",
                                      "2", "--out", str(run)])
    assert result.exit_code == 0, result.output
    stderr = " ".join(result.stderr.split())
    assert f"test: 102 items from {holdout} (the test data given apart)" in stderr
    assert "test split has only" not in stderr
    model = headstart.load(run)
    record = model.manifest.data
    assert record.test_source == str(holdout) and record.splits["test"] == model.metrics["n"] == 102
    assert record.splits["train"] + record.splits["val"] == 30

    assert model.split_options()["test"] == str(holdout)  # a distilled student is tested on the same items
    splits = model.recorded_splits()
    assert [str(p) for p in splits.test.items] == [str(p) for p in load_data(holdout).train.items]
    assert len(splits.val) == record.splits["val"] and len(splits.train) == record.splits["train"]

    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    assert f"the recorded test data {holdout}: 102 items" in page and "the test data given apart" in page
    assert json.loads((run / "metrics.json").read_text())["n"] == 102


def test_the_test_data_given_apart_stay_the_test_data_when_the_training_folder_has_its_own(tmp_path):
    data = tmp_path / "d"
    make_image_folder(data / "train", per_class=10, size=16)
    make_image_folder(data / "test", per_class=2, size=16, seed=1)
    holdout = make_image_folder(tmp_path / "holdout", per_class=3, size=16, seed=2)
    model = headstart.fit(data, "efficientnet_lite0", "probe", test=holdout, image_size=32, epochs=1)
    assert model.metrics["n"] == 9
    again = model.evaluate(data)  # the training source: its recorded test data, the holdout, not d/test
    assert again["n"] == 9 and again["accuracy"] == model.metrics["accuracy"]
    assert again["evaluated_on"] == model.metrics["evaluated_on"] == f"the recorded test data {holdout}"


def test_test_data_given_in_memory_are_named_and_asked_for_again_not_misread(tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=10, size=16)
    held = load_data(make_image_folder(tmp_path / "held", per_class=3, size=16, seed=2)).train
    model = headstart.fit(images, "efficientnet_lite0", "probe", test=held, image_size=32, epochs=1)
    assert model.manifest.data.test_source == f"in memory: {held.name}"
    with pytest.raises(DataError, match="given in memory"):
        model.recorded_splits()
    assert model.evaluate(held)["n"] == 9  # given again, they are scored
