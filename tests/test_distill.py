"""`distill`: a student fitted on a teacher's labels for unlabeled data, tested on the teacher's test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.data import Dataset, UnlabeledData, load_data, make_splits
from headstart.distillation import pseudo_label
from headstart.errors import DataError, SettingsError

from .conftest import make_tiny_bert, write_text_table


@pytest.fixture(scope="module")
def teacher_and_data(tmp_path_factory):
    """minilm's probe on 3 labels per class of the sentiment table (its test split: 20 sentences), and 160 new
    unlabeled sentences in a .txt file."""
    root = tmp_path_factory.mktemp("distill")
    table = write_text_table(root / "reviews.csv", n_per_class=40)
    teacher = headstart.fit(table, "minilm", "probe", out=root / "teacher", labels_per_class=3, val_size=10,
                            test_size=20, cache=False)
    texts = pd.read_csv(write_text_table(root / "more.csv", n_per_class=80, seed=1))["text"]
    (root / "unlabeled.txt").write_text("\n".join(t.replace("film", "movie") for t in texts) + "\n")
    return root, table, teacher


def test_teacher_labels_only_new_items(teacher_and_data):
    _, table, teacher = teacher_and_data
    splits = teacher.recorded_splits()
    again = make_splits(load_data(table), val_size=10, test_size=20, labels_per_class=3, seed=0)
    assert list(splits.test.items) == list(again.test.items) and list(splits.val.items) == list(again.val.items)
    new = ["a wonderful and lovely story", "a dull and tedious story"]
    items = [splits.test.items[0], splits.val.items[1], splits.train.items[2], new[0], new[1], new[0]]
    pseudo = pseudo_label(teacher, UnlabeledData("text", items, "mix", "mix"), splits)
    assert list(pseudo.dataset.items) == new  # held-out items would leak; a labeled item keeps its real label
    record = pseudo.record
    assert (record["dropped_in_val_or_test"], record["dropped_in_train"], record["dropped_repeats"]) == (2, 1, 1)
    assert list(pseudo.dataset.labels) == list(teacher.predict_proba(new).argmax(1))
    assert pseudo.dataset.classes == teacher.classes and record["pseudo_labeled"] == 2


def test_nothing_new_to_label_is_a_clear_error(teacher_and_data):
    _, _, teacher = teacher_and_data
    splits = teacher.recorded_splits()
    with pytest.raises(DataError, match="none of its 2 items is new"):
        pseudo_label(teacher, UnlabeledData("text", list(splits.test.items[:2]), "x", "x.txt"), splits)


def test_student_learns_from_the_teachers_labels(teacher_and_data, tmp_path):
    """A tiny random-init student fitted on 6 labeled sentences is near chance; with the teacher's labels for 160
    more it comes close to the teacher (95%) on the same test split."""
    root, _, _ = teacher_and_data
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    student = headstart.distill(root / "teacher", root / "unlabeled.txt", str(bert), "probe",  # a run folder
                                out=tmp_path / "student", max_length=32, cache=False, precision="fp32")
    alone = headstart.fit(root / "reviews.csv", str(bert), "probe", labels_per_class=3, val_size=10, test_size=20,
                          max_length=32, cache=False, precision="fp32")
    record = student.manifest.data.distillation
    assert record["pseudo_labeled"] == 160 and record["teacher"]["backbone"] == "minilm"
    assert student.manifest.data.splits == {"train": 166, "val": 6, "test": 20}
    teacher_test = teacher_and_data[2].recorded_splits().test.items
    assert list(student.recorded_splits().test.items) == list(teacher_test)  # report and export rebuild it
    assert alone.metrics["accuracy"] <= 0.65  # 6 labels: near chance for a random-init student
    assert student.metrics["accuracy"] >= 0.8 and student.metrics["accuracy"] >= alone.metrics["accuracy"] + 0.2
    assert headstart.load(tmp_path / "student" / "model").manifest.data.distillation == record  # saved with it


def test_cli_distill_prints_student_and_teacher(teacher_and_data, tmp_path):
    root, _, _ = teacher_and_data
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    result = CliRunner().invoke(app, ["distill", str(root / "teacher"), str(root / "unlabeled.txt"), "--backbone",
                                      str(bert), "--strategy", "probe", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "160 items labeled by the teacher (minilm" in result.output
    assert (tmp_path / "s" / "model" / "headstart.json").is_file()
    missing = CliRunner().invoke(app, ["distill", str(root / "teacher"), str(tmp_path / "none.txt")])
    assert missing.exit_code == 2 and "unlabeled data not found" in missing.output


def test_classes_must_match_the_teachers(teacher_and_data, tmp_path):
    _, _, teacher = teacher_and_data
    other = tmp_path / "other.csv"
    pd.DataFrame({"text": [f"item {i}" for i in range(40)], "label": np.repeat(["a", "b", "c", "d"], 10)}
                 ).to_csv(other, index=False)
    with pytest.raises(DataError, match=r"cannot read the data the model was fitted on.*pass --data"):
        headstart.distill(teacher, UnlabeledData("text", ["a new one"], "u", "u"), data=other)


def test_teacher_fitted_on_data_in_memory(teacher_and_data, tmp_path):
    """A teacher fitted on in-memory splits records no path: `data=` gives them again, and the student is
    tested on the same test items."""
    _, table, _ = teacher_and_data
    splits = load_data(table)
    teacher = headstart.fit(splits, "minilm", "probe", labels_per_class=3, val_size=10, test_size=20, cache=False)
    assert list(teacher.recorded_splits(splits).test.items) == list(teacher.recorded_splits(table).test.items)
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    student = headstart.distill(teacher, UnlabeledData("text", ["a lovely and superb story"], "u", "u"), str(bert),
                                "probe", data=splits, max_length=32, cache=False)
    assert student.manifest.data.splits == {"train": 7, "val": 6, "test": 20}


def test_split_options_are_the_teachers(teacher_and_data):
    _, _, teacher = teacher_and_data
    with pytest.raises(SettingsError, match="labels_per_class, seed cannot be set"):
        headstart.distill(teacher, UnlabeledData("text", ["a new one"], "u", "u"), seed=3, labels_per_class=5)


def test_concatenate_keeps_arrays_when_it_can():
    a = Dataset("image", np.zeros((2, 8, 8, 3), np.uint8), [0, 1], ["x", "y"])
    b = Dataset("image", np.ones((1, 8, 8, 3), np.uint8), [1], ["x", "y"])
    joined = a.concatenate(b)
    assert isinstance(joined.items, np.ndarray) and joined.items.shape == (3, 8, 8, 3)
    assert list(joined.labels) == [0, 1, 1]
    other_size = Dataset("image", np.ones((1, 4, 4, 3), np.uint8), [0], ["x", "y"])
    mixed = a.concatenate(other_size)
    assert isinstance(mixed.items, list) and [i.shape for i in mixed.items] == [(8, 8, 3)] * 2 + [(4, 4, 3)]
    with pytest.raises(ValueError, match="cannot join"):
        a.concatenate(Dataset("image", b.items, [0], ["x", "z"]))
