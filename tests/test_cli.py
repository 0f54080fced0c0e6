"""The command line: each sub-command, JSON outputs, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from headstart.cli import app

from .conftest import make_image_folder

runner = CliRunner()


def run(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def test_backbones_lists_names_and_offline_state():
    result = run("backbones", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["efficientnet_lite0"]["offline"] is True and "timm:<name>" in rows


def test_fit_evaluate_predict_images(image_folder, tmp_path):
    out = tmp_path / "run"
    result = run("fit", image_folder, "--backbone", "efficientnet_lite0", "--image-size", "64", "--out", out)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and (out / "metrics.json").is_file()
    result = run("evaluate", out / "model", image_folder, "--json")  # the data it was fitted on: its test split
    assert result.exit_code == 0
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] >= 0.9 and metrics["macro_f1"] >= 0.9 and metrics["n"] == 8
    assert metrics["accuracy"] == json.loads((out / "metrics.json").read_text())["accuracy"]
    result = run("predict", out / "model", image_folder / "blue", "--top-k", "2")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 12 and {r["label"] for r in lines} == {"blue"}
    assert len(lines[0]["top_k"]) == 2 and lines[0]["score"] == lines[0]["top_k"][0]["score"]


def test_predict_text_from_stdin_table_and_literal(text_table, tmp_path):
    out = tmp_path / "run"
    assert run("fit", text_table, "--backbone", "minilm", "--out", out).exit_code == 0
    result = run("predict", out / "model", "-", input="a wonderful and superb film\na dull and awful film\n")
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert labels == ["positive", "negative"]
    assert len(run("predict", out / "model", text_table).stdout.splitlines()) == 60
    assert json.loads(run("predict", out / "model", "just lovely").stdout)["input"] == "just lovely"


def _bad_inputs(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.png")
    empty_class = make_image_folder(tmp_path / "ec", per_class=3)
    (empty_class / "empty").mkdir()
    corrupt = make_image_folder(tmp_path / "corrupt", per_class=6)
    (corrupt / "red" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    no_text = tmp_path / "no_text.csv"
    pd.DataFrame({"words": ["a", "b"], "label": ["x", "y"]}).to_csv(no_text, index=False)
    one_class = tmp_path / "one.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", "x", "x"]}).to_csv(one_class, index=False)
    table = tmp_path / "ok.csv"
    pd.DataFrame({"text": list("abcdefgh"), "label": list("xyxyxyxy")}).to_csv(table, index=False)
    return {
        "missing path": (["fit", tmp_path / "nowhere"], "does not exist"),
        "no class folders": (["fit", flat], "no class sub-folders"),
        "class without files": (["fit", empty_class], "class 'empty' has no usable image files"),
        "corrupt image, strict": (["fit", corrupt, "--strict", "--image-size", "32"], "unreadable image"),
        "table without text column": (["fit", no_text], "no text or file column"),
        "one class": (["fit", one_class], "only one class"),
        "unknown backbone": (["fit", table, "--backbone", "bert-huge-9"], "unknown backbone 'bert-huge-9'"),
        "weights not offline": (["fit", table, "--backbone", "hf:nobody/missing-model"],
                                "not available offline"),
        "not a model folder": (["predict", tmp_path, "x"], "is not a saved headstart model"),
    }


@pytest.mark.parametrize("case", ["missing path", "no class folders", "class without files", "corrupt image, strict",
                                  "table without text column", "one class", "unknown backbone", "weights not offline",
                                  "not a model folder"])
def test_bad_input_gives_one_line_error_and_exit_2(tmp_path, case, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    args, message = _bad_inputs(tmp_path)[case]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_corrupt_image_is_skipped_with_a_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_image_folder(tmp_path / "c", per_class=6)
    (data / "red" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = run("fit", data, "--image-size", "32")
    assert result.exit_code == 0
    assert "1 unreadable image(s) skipped" in " ".join(result.stderr.split())
