"""The Python API as the ecosystem writes it: DataFrames and (items, labels) lists for fit/evaluate/predict,
predict_proba(as_frame=True), and `predict --out FILE.csv|.jsonl --batch-size N`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.data import load_data
from headstart.errors import DataError

from .conftest import make_tiny_bert, write_text_table

FIT = {"max_length": 32, "cache": False, "seed": 0}


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A tiny sentiment table as a file and as a DataFrame, and a tiny BERT to fit on them."""
    root = tmp_path_factory.mktemp("api")
    table = write_text_table(root / "reviews.csv", n_per_class=20)
    return {"table": table, "frame": pd.read_csv(table), "bert": str(make_tiny_bert(root / "bert"))}


@pytest.fixture(scope="module")
def text_run(texts, tmp_path_factory):
    """A probe fitted on the DataFrame and saved (for the CLI)."""
    out = tmp_path_factory.mktemp("run") / "run"
    headstart.fit(texts["frame"], texts["bert"], "probe", out=out, **FIT)
    return out


def _same_metrics(a: dict, b: dict) -> None:
    for key in ("accuracy", "macro_f1", "nll", "n"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_a_dataframe_and_lists_fit_and_evaluate_as_their_csv_file_does(texts):
    frame = texts["frame"]
    from_file = headstart.fit(texts["table"], texts["bert"], "probe", **FIT)
    from_frame = headstart.fit(frame, texts["bert"], "probe", **FIT)
    from_lists = headstart.fit((frame["text"].tolist(), frame["label"].tolist()), texts["bert"], "probe", **FIT)
    for model in (from_frame, from_lists):
        assert model.classes == from_file.classes == ["negative", "positive"]
        _same_metrics(model.metrics, from_file.metrics)  # the same rows, split the same way
    assert from_frame.manifest.data.source == "dataframe" and from_lists.manifest.data.source == "lists"
    _same_metrics(headstart.evaluate(from_frame, frame), headstart.evaluate(from_frame, texts["table"]))
    _same_metrics(from_frame.evaluate((frame["text"].tolist(), frame["label"].tolist())),
                  from_frame.evaluate(texts["table"]))


def test_predict_takes_a_series_or_a_dataframe_and_as_frame_names_the_classes(text_run, texts):
    model = headstart.load(text_run / "model")
    frame = texts["frame"].set_index(pd.Index([f"row{i}" for i in range(len(texts["frame"]))]))
    as_list = model.predict(frame["text"].tolist())
    assert model.predict(frame["text"]) == as_list == model.predict(frame)  # a DataFrame: its text column
    assert np.mean(np.array(as_list) == frame["label"].to_numpy()) > 0.5
    probs = model.predict_proba(frame["text"], as_frame=True)
    assert list(probs.columns) == model.classes and list(probs.index) == list(frame.index)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(probs.to_numpy(), model.predict_proba(frame["text"].tolist()))
    plain = model.predict_proba(as_list[:3], as_frame=True)
    assert list(plain.index) == [0, 1, 2]
    with pytest.raises(DataError, match="row 'row1'"):
        model.predict(frame["text"].where(frame.index != "row1"))  # a missing text is named, not skipped


def test_a_dataframe_of_image_paths_fits_like_its_folder(shared_image_folder):
    files = sorted(shared_image_folder.rglob("*.png"))
    frame = pd.DataFrame({"image": [str(f) for f in files], "class": [f.parent.name for f in files]})
    data = load_data(frame).train
    assert data.modality == "image" and data.items == files
    options = {"image_size": 64, "test_size": 9, "seed": 0}
    from_frame = headstart.fit(frame, "efficientnet_lite0", "probe", **options)
    from_folder = headstart.fit(shared_image_folder, "efficientnet_lite0", "probe", **options)
    assert from_frame.modality == "image" and from_frame.classes == ["blue", "green", "red"]
    _same_metrics(from_frame.metrics, from_folder.metrics)
    assert headstart.evaluate(from_frame, frame)["accuracy"] >= 0.9
    assert from_frame.predict(frame["image"]) == from_frame.predict(files)


@pytest.mark.parametrize("source, message", [
    (pd.DataFrame({"path": ["a.png", "notes.txt", "b.png"], "label": ["x", "y", "x"]}), "'notes.txt', which is not"),
    (pd.DataFrame({"path": ["nowhere/a.png", "nowhere/b.png"], "label": ["x", "y"]}), "2 of 2 image paths"),
    (pd.DataFrame({"words": ["a", "b"], "label": ["x", "y"]}), "no text or file column"),
    (pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]}), "only one class"),
    (pd.DataFrame({"text": [], "label": []}), "has no rows"),
    ((["a", "b", "c"], ["x", "y"]), "3 items but 2 labels"),
    (("abc", ["x", "y", "z"]), "items must be a list"),
])
def test_bad_in_memory_data_is_one_line_naming_the_problem(source, message):
    with pytest.raises(DataError, match=message):
        load_data(source)


def test_in_memory_labels_read_as_a_table_reads_them(caplog):
    frame = pd.DataFrame({"Sentence": ["good", "bad", "fine", None, "meh"], "y": [1, 0, 1, 0, None]})
    data = load_data(frame).train
    assert data.classes == ["0", "1"]  # integers held as floats because of the gap: not "0.0", "1.0"
    assert data.items == ["good", "bad", "fine"] and data.labels.tolist() == [1, 0, 1]
    assert "1 row(s) without text and 1 without a label" in caplog.text
    with pytest.raises(DataError, match="takes image inputs"):
        load_data(frame, modality="image")
    with pytest.raises(DataError, match="labels not seen in training: 2"):
        load_data(([1, 2], [0, 2]), classes=["0", "1"])


def _run(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def test_predict_out_writes_the_records_it_prints(text_run, tmp_path):
    texts = ["a wonderful and superb film", "a dull and awful film", "just lovely"]
    printed = _run("predict", text_run / "model", *texts)
    assert printed.exit_code == 0, printed.output
    records = [json.loads(line) for line in printed.stdout.splitlines()]
    assert len(records) == 3
    result = _run("predict", text_run / "model", *texts, "--out", tmp_path / "p.jsonl")
    assert result.exit_code == 0 and result.stdout == "" and "wrote 3 predictions" in result.stderr
    assert [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()] == records
    assert _run("predict", text_run / "model", *texts, "--out", tmp_path / "p.csv").exit_code == 0
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["input", "label", "score", "top_k", "error"]
    assert [{"input": r["input"], "label": r["label"], "score": float(r["score"]), "top_k": json.loads(r["top_k"])}
            for r in rows] == records
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary file left behind


def test_predict_batch_size_reaches_the_embedding_computation(text_run, monkeypatch):
    import headstart.embeddings

    seen = []
    compute = headstart.embeddings.compute_embeddings

    def spy(backbone, items, batch_size=None, *args, **kwargs):
        seen.append(batch_size)
        return compute(backbone, items, batch_size, *args, **kwargs)

    monkeypatch.setattr(headstart.embeddings, "compute_embeddings", spy)
    texts = ["a wonderful film", "a dull film", "lovely", "awful"]
    default = _run("predict", text_run / "model", *texts)
    small = _run("predict", text_run / "model", *texts, "--batch-size", "2")
    assert default.exit_code == small.exit_code == 0 and seen == [None, 2]
    labels = [[json.loads(line)["label"] for line in r.stdout.splitlines()] for r in (default, small)]
    assert labels[0] == labels[1] and len(labels[0]) == 4


@pytest.mark.parametrize("args, message", [
    (["--out", "predictions.txt"], "give a .csv, .jsonl or .parquet file"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_predict_refuses_a_bad_out_or_batch_size_before_any_work(args, message, tmp_path):
    result = _run("predict", tmp_path / "no-model", "text", *args)  # the model is never loaded
    assert result.exit_code == 2 and message in result.stderr


def test_predict_out_and_batch_size_with_the_onnx_runtime(exported_text, tmp_path):
    texts = ["a delightful and superb film", "a tedious and painful film", "fine"]
    printed = _run("predict", exported_text, *texts, "--runtime", "onnx")
    records = [json.loads(line) for line in printed.stdout.splitlines()]
    assert printed.exit_code == 0 and len(records) == 3
    result = _run("predict", exported_text, *texts, "--runtime", "onnx", "--batch-size", "1", "--out",
                  tmp_path / "p.jsonl")
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["label"] for r in written] == [r["label"] for r in records]
    assert [r["score"] for r in written] == pytest.approx([r["score"] for r in records], abs=1e-5)


def test_the_onnx_runtime_reads_a_series_by_position_not_by_label():
    import pandas as pd

    from headstart.runtime.onnx_model import _positional

    shuffled = pd.Series(["a", "b", "c"], index=[2, 0, 1])
    assert _positional(shuffled) == ["a", "b", "c"]  # shuffled[0] would be "b"
    with pytest.raises(DataError, match="pass its text"):
        _positional(pd.DataFrame({"text": ["a"]}))
