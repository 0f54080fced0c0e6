"""Multi-label and regression tasks end to end (fit, evaluate, predict, save/load, export, serve) on small tables the
tests make, what each task tunes on the validation split (per-label thresholds, conformal intervals), and the
one-line errors for data and settings a task cannot use."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.model import TrainedModel
from headstart.serving import build_app
from headstart.tasks import make_task

from .conftest import make_image_folder, make_tiny_bert
from .test_bad_inputs import assert_one_line_error

runner = CliRunner()

TAG_WORDS = {"sea": ["sea", "ocean", "wave", "shore"], "sun": ["sun", "sunny", "bright", "noon"],
             "tree": ["tree", "forest", "leaf", "oak"]}
TARGET_MEAN, TARGET_SCALE = 1000.0, 50.0
PREDICT_TEXTS = ["the sea and the ocean", "a sunny noon", "forest and oak", "waves under a bright sun"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def json_lines(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def write_tag_table(path: Path, n: int = 300, seed: int = 0) -> Path:
    """Texts naming one or two of three tags with words of theirs; the cell joins the tags with '|'."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        tags = sorted(rng.choice(list(TAG_WORDS), rng.integers(1, 3), replace=False))
        words = [str(rng.choice(TAG_WORDS[t])) for t in tags]
        rows.append({"text": f"{' and '.join(words)} picture {i}", "labels": "|".join(tags)})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_score_table(path: Path, n: int = 300, seed: int = 0) -> Path:
    """Texts whose words say whether their score (about 1000, spread 50) is above or below the mean."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    rows = [{"text": f"{'good' if v > 0 else 'bad'} {'great' if v > 1 else 'poor' if v < -1 else 'fair'} item {i}",
             "score": TARGET_MEAN + TARGET_SCALE * v} for i, v in enumerate(z)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    make_tiny_bert(root / "tiny-bert")
    write_tag_table(root / "tags.csv")
    write_score_table(root / "scores.csv")
    return root


@pytest.fixture(scope="module")
def multilabel_run(workspace) -> Path:
    headstart.fit(workspace / "tags.csv", str(workspace / "tiny-bert"), "probe", task="multilabel",
                  out=workspace / "ml", max_length=16, cache=False)
    return workspace / "ml"


@pytest.fixture(scope="module")
def regression_run(workspace) -> Path:
    headstart.fit(workspace / "scores.csv", str(workspace / "tiny-bert"), "probe", task="regression", target="score",
                  out=workspace / "reg", max_length=16, cache=False)
    return workspace / "reg"


def _exported(run_dir: Path) -> Path:
    result = run("export", run_dir / "model")
    assert result.exit_code == 0, result.output
    return run_dir / "model"


@pytest.fixture(scope="module")
def exported_multilabel(multilabel_run) -> Path:
    return _exported(multilabel_run)


@pytest.fixture(scope="module")
def exported_regression(regression_run) -> Path:
    return _exported(regression_run)


RUNS = {"multilabel": ("multilabel_run", "tags.csv"), "regression": ("regression_run", "scores.csv")}


# ------------------------------------------------------------------------------------------------ fit, evaluate


def test_a_multilabel_probe_records_its_task_and_per_label_thresholds(multilabel_run):
    model = TrainedModel.load(multilabel_run / "model")
    head = json.loads((multilabel_run / "model" / "headstart.json").read_text())["head"]
    assert model.task_name == "multilabel" and model.classes == sorted(TAG_WORDS)
    assert head["task"] == "multilabel" and head["task_settings"] == {"label_separator": "|"}
    thresholds = head["task_params"]["thresholds"]
    assert len(thresholds) == 3 and all(0 < t < 1 for t in thresholds)
    metrics = model.metrics
    assert {"macro_f1", "micro_f1", "map", "subset_accuracy", "hamming_loss"} <= set(metrics)
    assert set(metrics["per_label"]) == set(TAG_WORDS)
    assert [metrics["per_label"][c]["threshold"] for c in model.classes] == thresholds
    assert metrics["map"] > 0.7  # the tags' words are in the texts: learnable even from a random tiny BERT


def test_a_regression_probe_restores_the_targets_units(regression_run, workspace):
    model = TrainedModel.load(regression_run / "model")
    params = model.task_params
    assert model.task_name == "regression" and model.classes == ["score"]
    assert abs(params["target_mean"][0] - TARGET_MEAN) < 15 and abs(params["target_scale"][0] - TARGET_SCALE) < 10
    texts = pd.read_csv(workspace / "scores.csv")["text"].tolist()[:100]
    values = model.predict_proba(texts)[:, 0]
    assert abs(values.mean() - TARGET_MEAN) < 25  # in the targets' units, not standardised ones
    assert values.std() > 5  # and not the mean alone: the words move the prediction
    assert {"mae", "rmse", "r2", "pearson", "spearman", "interval_coverage", "interval_width"} <= set(model.metrics)


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_evaluate_scores_the_recorded_test_split_from_the_cli_and_python(task, workspace, request):
    fixture, table = RUNS[task]
    run_dir = request.getfixturevalue(fixture)
    model = TrainedModel.load(run_dir / "model")
    cli = json_lines(run("evaluate", run_dir / "model", workspace / table, "--json"))[-1]
    python = headstart.evaluate(run_dir / "model", workspace / table)
    assert cli["n"] == python["n"] == model.manifest.data.splits["test"] == model.metrics["n"]
    for key in model.task.headline:
        assert cli[key] == pytest.approx(model.metrics[key], abs=1e-6)
        assert python[key] == pytest.approx(model.metrics[key], abs=1e-6)


# ------------------------------------------------------------------------------------------------ predict, save


def test_multilabel_predictions_are_a_label_set_with_a_score_per_label(multilabel_run):
    model = headstart.load(multilabel_run / "model")
    thresholds = dict(zip(model.classes, model.task_params["thresholds"]))
    records = json_lines(run("predict", multilabel_run / "model", *PREDICT_TEXTS))
    assert len(records) == len(PREDICT_TEXTS)
    for record, text, decided in zip(records, PREDICT_TEXTS, model.predict(PREDICT_TEXTS)):
        assert set(record) == {"input", "labels", "scores"} and record["input"] == text
        assert set(record["scores"]) == set(model.classes)
        assert set(record["labels"]) == {c for c, s in record["scores"].items() if s >= thresholds[c]}
        assert set(record["labels"]) == set(decided)
    assert "sea" in records[0]["labels"] and "tree" in records[2]["labels"]


def test_regression_predictions_are_values_with_conformal_intervals(regression_run):
    model = headstart.load(regression_run / "model")
    half_width = model.task_params["interval_half_widths"][0]
    records = json_lines(run("predict", regression_run / "model", "good great item", "bad poor item"))
    for record, decided in zip(records, model.predict(["good great item", "bad poor item"])):
        assert set(record) == {"input", "values", "intervals", "coverage"} and record["coverage"] == 0.9
        value = record["values"]["score"]
        assert value == pytest.approx(decided["score"], abs=1e-3)
        assert record["intervals"]["score"] == pytest.approx([value - half_width, value + half_width], abs=1e-3)
    assert records[0]["values"]["score"] > records[1]["values"]["score"]


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_a_saved_and_loaded_model_gives_the_same_scores(task, request, tmp_path):
    run_dir = request.getfixturevalue(RUNS[task][0])
    model = TrainedModel.load(run_dir / "model")
    before = model.predict_proba(PREDICT_TEXTS)
    model.save(tmp_path / "copy")
    again = TrainedModel.load(tmp_path / "copy")
    np.testing.assert_allclose(again.predict_proba(PREDICT_TEXTS), before, rtol=1e-6, atol=1e-6)
    assert again.task_params == model.task_params and again.task.settings() == model.task.settings()
    assert again.predict(PREDICT_TEXTS) == model.predict(PREDICT_TEXTS)


# ------------------------------------------------------------------------------------------------ export, serve


def test_the_exported_multilabel_graph_predicts_like_the_model(exported_multilabel):
    sidecar = json.loads((exported_multilabel / "model.onnx.json").read_text())
    head = json.loads((exported_multilabel / "headstart.json").read_text())["head"]
    assert sidecar["task"] == "multilabel" and sidecar["task_params"] == head["task_params"]
    assert sidecar["parity"]["top1_agreement"] == 1.0
    onnx = json_lines(run("predict", exported_multilabel, *PREDICT_TEXTS, "--runtime", "onnx"))
    torch_ = json_lines(run("predict", exported_multilabel, *PREDICT_TEXTS))
    for a, b in zip(onnx, torch_):
        assert set(a["labels"]) == set(b["labels"])
        assert all(abs(a["scores"][c] - b["scores"][c]) < 1e-3 for c in b["scores"])
    graph = headstart.load(exported_multilabel, runtime="onnx")
    assert graph.predict(PREDICT_TEXTS) == headstart.load(exported_multilabel).predict(PREDICT_TEXTS)


def test_the_exported_regression_graph_predicts_like_the_model(exported_regression):
    sidecar = json.loads((exported_regression / "model.onnx.json").read_text())
    params = json.loads((exported_regression / "headstart.json").read_text())["head"]["task_params"]
    assert sidecar["task"] == "regression" and sidecar["task_params"] == params
    assert set(params) >= {"target_mean", "target_scale", "interval_half_widths", "coverage"}
    texts = ["good great item", "bad poor item", "good fair item"]
    onnx = json_lines(run("predict", exported_regression, *texts, "--runtime", "onnx"))
    torch_ = json_lines(run("predict", exported_regression, *texts))
    for a, b in zip(onnx, torch_):
        assert a["values"]["score"] == pytest.approx(b["values"]["score"], abs=1e-3 * TARGET_SCALE)
        assert a["intervals"]["score"] == pytest.approx(b["intervals"]["score"], abs=1e-3 * TARGET_SCALE)
        assert a["coverage"] == b["coverage"] == 0.9


@pytest.mark.parametrize("task", ["multilabel", "regression"])
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_the_server_answers_the_records_predict_gives_and_shows_the_task(task, runtime, request):
    model_dir = request.getfixturevalue({"multilabel": "exported_multilabel", "regression": "exported_regression"}[task])
    expected = json_lines(run("predict", model_dir, *PREDICT_TEXTS, "--runtime", runtime))
    with TestClient(build_app(model_dir, runtime=runtime)) as client:
        response = client.post("/predict", json={"inputs": PREDICT_TEXTS})
        meta = client.get("/metadata").json()
    assert response.status_code == 200
    got = response.json()["predictions"]
    assert [r for r in got] == [{k: v for k, v in r.items() if k != "input"} for r in expected]
    assert meta["task"] == task and meta["classes"] == headstart.load(model_dir).classes
    key = "thresholds" if task == "multilabel" else "interval_half_widths"
    assert meta["task_params"][key] == headstart.load(model_dir).task_params[key]


# ------------------------------------------------------------------------------------------------ finetune


@pytest.mark.parametrize("task, table, options", [
    ("multilabel", "tags.csv", {}),
    ("regression", "scores.csv", {"target": "score", "regression_loss": "huber"}),
])
def test_one_finetune_epoch_trains_each_task(task, table, options, workspace, tmp_path):
    model = headstart.fit(workspace / table, str(workspace / "tiny-bert"), "finetune", epochs=1, task=task,
                          out=tmp_path / "run", max_length=16, cache=False, **options)
    again = TrainedModel.load(tmp_path / "run" / "model")
    assert again.manifest.strategy.name == "finetune" and again.task_name == task
    assert again.task.settings() == make_task(task, **options).settings()
    records = json_lines(run("predict", tmp_path / "run" / "model", *PREDICT_TEXTS))
    if task == "multilabel":
        assert all(set(r["scores"]) == set(TAG_WORDS) for r in records) and "thresholds" in again.task_params
    else:
        values = [r["values"]["score"] for r in records]
        assert all(abs(v - TARGET_MEAN) < 4 * TARGET_SCALE for v in values)  # restored to the targets' units
        assert all(r["intervals"]["score"][0] < v < r["intervals"]["score"][1] for r, v in zip(records, values))
    np.testing.assert_allclose(again.predict_proba(PREDICT_TEXTS), model.predict_proba(PREDICT_TEXTS), atol=1e-5)


# ------------------------------------------------------------------------------------------------ image tables


def _tagged_images(root: Path, n: int = 24) -> pd.DataFrame:
    """PNGs whose red and blue channels are their tags ('warm', 'cool', or both), in root/scenes/."""
    folder = root / "scenes"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        tags = [["warm"], ["cool"], ["warm", "cool"]][i % 3]
        pixels = rng.integers(0, 60, (16, 16, 3))
        pixels[..., 0] += 180 * ("warm" in tags)
        pixels[..., 2] += 180 * ("cool" in tags)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
        rows.append({"filename": f"img{i}.png", "labels": "|".join(tags)})
    return pd.DataFrame(rows)


def test_a_multilabel_image_table_reads_paths_beside_it_in_the_folder_named_like_it(tmp_path):
    from headstart.data import load_data

    _tagged_images(tmp_path).to_csv(tmp_path / "scenes.csv", index=False)  # scenes.csv + scenes/img0.png ...
    data = load_data(tmp_path / "scenes.csv", task=make_task("multilabel")).train
    assert data.modality == "image" and data.classes == ["cool", "warm"] and len(data) == 24
    assert [Path(p) for p in data.items] == [tmp_path / "scenes" / f"img{i}.png" for i in range(24)]
    np.testing.assert_array_equal(data.labels[:3], [[0, 1], [1, 0], [1, 1]])

    model = headstart.fit(tmp_path / "scenes.csv", "smallcnn", "finetune", epochs=1, task="multilabel",
                          out=tmp_path / "run", val_size=6, test_size=6, cache=False)
    records = json_lines(run("predict", tmp_path / "run" / "model", tmp_path / "scenes" / "img2.png"))
    assert model.modality == "image" and set(records[0]["scores"]) == {"cool", "warm"}


# ------------------------------------------------------------------------------------------------ multi-label


def test_labels_never_seen_together_in_training_are_predicted_together():
    """A sigmoid per label: an item with the features of both A and B gets both, though no training item had
    both (a softmax over label sets could not)."""
    from headstart.data import Dataset
    from headstart.strategies.probe import Probe, train_head

    rng = np.random.default_rng(0)
    task = make_task("multilabel")

    def data(n: int, label_sets: list[list[int]]) -> tuple[np.ndarray, Dataset]:
        labels = np.zeros((n, 3), np.float32)
        for i in range(n):
            labels[i, label_sets[i % len(label_sets)]] = 1
        x = (3 * labels + rng.normal(0, 0.5, (n, 3))).astype(np.float32)
        x = np.hstack([x, rng.normal(0, 1, (n, 5)).astype(np.float32)])
        return x, Dataset("text", [""] * n, labels, ["a", "b", "c"], task=task)

    train_x, train = data(300, [[0], [1], [2], [0, 2], [1, 2]])  # a and b: each alone or with c, never together
    val_x, val = data(60, [[0], [1], [2], [0, 2], [1, 2]])
    assert not (train.labels[:, 0] * train.labels[:, 1]).any()
    head, _ = train_head(train_x, train, val_x, val, Probe(), seed=0)
    items = np.zeros((3, 8), np.float32)
    items[0, 0] = items[1, 1] = 3  # a alone, b alone: as in training
    items[2, :2] = 3  # a and b
    assert task.decide(head.probabilities(items), ["a", "b", "c"], head.params) == [["a"], ["b"], ["a", "b"]]


def test_predict_uses_the_thresholds_stored_in_the_model_and_its_graph(exported_multilabel, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(exported_multilabel, copy)
    texts = [*PREDICT_TEXTS, "nothing in particular", "a picture"]
    before = headstart.load(copy).predict(texts)
    first, second = headstart.load(copy).classes[:2]
    assert any(first not in labels for labels in before) and any(second in labels for labels in before)

    for name in ("headstart.json", "model.onnx.json"):  # the model's manifest and the graph's sidecar
        file = copy / name
        record = json.loads(file.read_text())
        params = record["head"]["task_params"] if name == "headstart.json" else record["task_params"]
        params["thresholds"][:2] = [0.0, 1.01]  # the first label always, the second never
        file.write_text(json.dumps(record))
    for model in (headstart.load(copy), headstart.load(copy, runtime="onnx")):
        after = model.predict(texts)
        assert all(first in labels and second not in labels for labels in after)
        assert [[c for c in labels if c not in (first, second)] for labels in after] == \
            [[c for c in labels if c not in (first, second)] for labels in before]


# ------------------------------------------------------------------------------------------------ regression


def test_regression_trains_on_standardised_targets_and_outputs_the_targets_units():
    task = make_task("regression")
    targets = np.array([[900.0], [1000.0], [1100.0], [1000.0]], np.float32)
    params = task.initial_params(targets, ["y"])
    assert params["target_mean"] == [pytest.approx(1000.0)]
    assert params["target_scale"] == [pytest.approx(np.std([900, 1000, 1100, 1000]))]
    z = (targets - 1000.0) / params["target_scale"][0]
    # the loss compares raw outputs with standardised targets: outputs equal to them cost nothing
    assert float(task.loss(torch.from_numpy(z), torch.from_numpy(targets), params)) == pytest.approx(0, abs=1e-6)
    assert float(task.loss(torch.zeros(4, 1), torch.from_numpy(targets), params)) == pytest.approx(
        float((z ** 2).mean()), rel=1e-5)
    np.testing.assert_allclose(task.scores(torch.from_numpy(z), params).numpy(), targets, rtol=1e-6)


def test_conformal_half_width_is_the_rank_ceil_n_plus_1_times_coverage_residual():
    rng = np.random.default_rng(0)
    n = 199
    task = make_task("regression", coverage=0.9)
    params = {"target_mean": [10.0, -5.0], "target_scale": [2.0, 0.5]}
    logits = rng.standard_normal((n, 2))
    residuals = rng.standard_normal((n, 2)) * [3.0, 0.1]
    labels = logits * params["target_scale"] + params["target_mean"] + residuals
    tuned, record = task.tune(logits, labels, params, calibrate=True, seed=0)
    rank = math.ceil((n + 1) * 0.9)  # the 180th smallest of 199
    expected = np.sort(np.abs(residuals), axis=0)[rank - 1]
    np.testing.assert_allclose(tuned["interval_half_widths"], expected, rtol=1e-9)
    assert tuned["coverage"] == 0.9 and record["method"] == "split conformal" and record["n"] == n
    assert tuned["target_mean"] == params["target_mean"]

    few, record = task.tune(logits[:5], labels[:5], params, calibrate=True, seed=0)  # rank 6 of 5: no interval
    assert few["interval_half_widths"] is None and record["method"] == "none"


def test_conformal_intervals_cover_about_the_asked_share_of_new_items():
    rng = np.random.default_rng(1)
    task = make_task("regression")  # 90% by default
    params = {"target_mean": [0.0], "target_scale": [1.0]}

    def items(n: int) -> tuple[np.ndarray, np.ndarray]:
        predicted = rng.standard_normal((n, 1))
        return predicted, predicted + rng.standard_t(5, (n, 1))  # heavy-tailed errors: no Gaussian assumption

    tuned, _ = task.tune(*items(2000), params, calibrate=True, seed=0)
    fresh_predicted, fresh_labels = items(2000)
    metrics = task.metrics(fresh_labels, fresh_predicted, ["y"], tuned)
    assert 0.8 <= metrics["interval_coverage"] <= 0.97
    assert metrics["interval_width"] == pytest.approx(2 * tuned["interval_half_widths"][0])


# ------------------------------------------------------------------------------------------------ bad inputs


def _table(path: Path, labels: list[str], column: str = "labels") -> Path:
    pd.DataFrame({"text": [f"text {i}" for i in range(len(labels))], column: labels}).to_csv(path, index=False)
    return path


BAD = [
    ("an empty label", lambda d: _table(d / "t.csv", ["a|b", "a||b", "b"] * 8), ["--task", "multilabel"],
     "has an empty label ('a||b')"),
    ("no separator", lambda d: _table(d / "t.csv", ["a;b", "a", "b"] * 8), ["--task", "multilabel"],
     "no label cell of column 'labels' holds the separator '|'"),
    ("a text target", lambda d: _table(d / "t.csv", ["1.5", "2.5", "lots"] * 8, "score"),
     ["--task", "regression", "--target", "score"], "row 3 of target column 'score' is 'lots', not a finite number"),
    ("a constant target", lambda d: _table(d / "t.csv", ["4.0"] * 24, "score"),
     ["--task", "regression", "--target", "score"], "target column 'score' has one distinct value (4)"),
    ("a missing target", lambda d: _table(d / "t.csv", ["1.5", "2.5"] * 12, "score"),
     ["--task", "regression", "--target", "valence"], "has no column 'valence' (columns: text, score)"),
    ("a separator for classes", lambda d: _table(d / "t.csv", ["a", "b"] * 12),
     ["--label-separator", ";"], "--label-separator does not apply to --task classification"),
    ("class folders", lambda d: make_image_folder(d / "images", per_class=2), ["--task", "multilabel"],
     "gives one class per item (class folders), but --task multilabel needs the labels in a table"),
    ("labels per class", lambda d: _table(d / "t.csv", [str(v) for v in range(24)], "score"),
     ["--task", "regression", "--target", "score", "--labels-per-class", "4"],
     "--labels-per-class) applies to classification, not to --task regression"),
    ("contrastive pairs", lambda d: _table(d / "t.csv", ["a|b", "a", "b"] * 8),
     ["--task", "multilabel", "--strategy", "contrastive"],
     "--strategy contrastive trains classification only, not --task multilabel"),
]


@pytest.mark.parametrize("case, make, options, message", BAD, ids=[case[0] for case in BAD])
def test_data_and_settings_a_task_cannot_use_are_one_line_errors(case, make, options, message, workspace, tmp_path):
    data = make(tmp_path)
    result = run("fit", data, "--backbone", workspace / "tiny-bert", "--out", tmp_path / "run", "--no-cache",
                 *options)
    assert_one_line_error(result, message)
    assert not (tmp_path / "run" / "model").exists()
