"""`distill`: a student fitted on a teacher's labels for unlabeled data, tested on the teacher's test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.distillation import pseudo_label, teacher_splits
from headstart.errors import DataError
from headstart.pretraining.unlabeled import UnlabeledData

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
    splits = teacher_splits(teacher)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [6, 6, 20]  # the teacher's own splits again
    assert sorted(splits.test.items) == sorted(teacher_splits(teacher, data=table).test.items)
    new = ["a wonderful and lovely story", "a dull and tedious story"]
    items = [splits.test.items[0], splits.val.items[1], splits.train.items[2], *new]
    pseudo, record = pseudo_label(teacher, UnlabeledData("text", items, "mix", "mix"), splits)
    assert list(pseudo.items) == new  # held-out items would leak; a labeled item keeps its real label
    assert record["dropped_in_val_or_test"] == 2 and record["dropped_in_train"] == 1
    assert list(pseudo.labels) == list(teacher.predict_proba(new).argmax(1))
    assert pseudo.classes == teacher.classes and record["pseudo_labeled"] == 2


def test_nothing_new_to_label_is_a_clear_error(teacher_and_data):
    _, _, teacher = teacher_and_data
    splits = teacher_splits(teacher)
    with pytest.raises(DataError, match="none of its 2 items is new"):
        pseudo_label(teacher, UnlabeledData("text", list(splits.test.items[:2]), "x", "x.txt"), splits)


def test_student_learns_from_the_teachers_labels(teacher_and_data, tmp_path):
    """A tiny random-init student fitted on 6 labeled sentences is near chance; with the teacher's labels for 160
    more it comes close to the teacher (95%) on the same test split."""
    root, _, _ = teacher_and_data
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    student = headstart.distill(root / "teacher" / "model", root / "unlabeled.txt", str(bert), "probe",
                                out=tmp_path / "student", max_length=32, cache=False)
    alone = headstart.fit(root / "reviews.csv", str(bert), "probe", labels_per_class=3, val_size=10, test_size=20,
                          max_length=32, cache=False)
    record = student.manifest.data.distillation
    assert record["pseudo_labeled"] == 160 and record["teacher"]["backbone"] == "minilm"
    assert student.manifest.data.splits == {"train": 166, "val": 6, "test": 20}
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
    with pytest.raises(DataError, match="differ from the teacher's"):
        headstart.distill(teacher, UnlabeledData("text", ["a new one"], "u", "u"), data=other)
