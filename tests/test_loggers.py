"""`--logger csv|tensorboard|mlflow`: the training curves of the probe, finetune, contrastive and pretrain reach the
chosen logger, read back with that logger's own reader; CSV stays the default; a missing package is one clear
error before any work."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.errors import HeadstartError

from .conftest import make_image_folder, make_tiny_bert, write_text_table


def _needs(module: str):
    return pytest.importorskip(module, reason=f"--logger needs the {module} package (pip install {module})")


def _scalars(logs: Path) -> dict[str, list[float]]:
    """Every scalar TensorBoard finds in the event files under `logs`, by tag, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[float]] = {}
    for events in sorted(logs.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return found


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, Path]:
    """A small review table and a tiny BERT: a probe on them takes about a second."""
    root = tmp_path_factory.mktemp("loggers")
    return write_text_table(root / "reviews.csv", n_per_class=20), make_tiny_bert(root / "tiny-bert")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images") / "images", per_class=12, size=16)


def _probe(texts, out: Path, **options):
    table, bert = texts
    # batch_size 4: the probe's 600 head steps in 100 epochs (a few epochs' curves is all these tests need)
    return headstart.fit(table, str(bert), "probe", out=out, max_length=16, cache=False, batch_size=4, **options)


def test_probe_from_the_command_line_writes_its_epochs_as_tensorboard_scalars(texts, tmp_path):
    _needs("tensorboard")
    table, bert = texts
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", str(table), "--backbone", str(bert), "--out", str(run), "--logger",
                                      "tensorboard", "--max-length", "16", "--no-cache", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    history = headstart.load(run / "model").manifest.training["head_stage"]["history"]
    scalars = _scalars(run / "logs")
    assert scalars["head_stage/val_loss"] == pytest.approx([h["val_loss"] for h in history])
    assert scalars["head_stage/val_accuracy"] == pytest.approx([h["val_accuracy"] for h in history])
    assert len(scalars["head_stage/train_loss"]) == len(history)
    assert not list((run / "logs").rglob("metrics.csv"))  # tensorboard instead of CSV, not beside it


def test_finetune_writes_lightnings_losses_as_tensorboard_scalars(images, tmp_path):
    _needs("tensorboard")
    run = tmp_path / "run"
    model = headstart.fit(images, "smallcnn", "finetune", out=run, epochs=2, image_size=16, batch_size=8,
                          logger="tensorboard")
    scalars = _scalars(run / "logs")
    assert len(scalars["val_loss"]) == model.manifest.training["finetune"]["epochs_run"] == 2
    assert scalars["train_loss"] and all(v > 0 for v in scalars["train_loss"])


def test_probe_logs_an_mlflow_run_in_the_run_folder(texts, tmp_path, monkeypatch):
    _needs("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder (MLflow's default ./mlruns)
    run = tmp_path / "run"
    model = _probe(texts, run, logger="mlflow")
    history = model.manifest.training["head_stage"]["history"]
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'logs' / 'mlflow.db'}")
    [logged] = client.search_runs([client.get_experiment_by_name("headstart").experiment_id])
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    losses = client.get_metric_history(logged.info.run_id, "head_stage/val_loss")
    assert [m.step for m in losses] == [h["epoch"] for h in history]
    assert [m.value for m in losses] == pytest.approx([h["val_loss"] for h in history])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_csv_stays_the_default_for_the_probe_and_contrastive(texts, tmp_path):
    model = _probe(texts, tmp_path / "probe")
    [csv] = (tmp_path / "probe" / "logs").glob("version_*/metrics.csv")
    frame = pd.read_csv(csv)
    history = model.manifest.training["head_stage"]["history"]
    assert frame["epoch"].tolist() == [h["epoch"] for h in history]
    assert frame["head_stage/val_loss"].tolist() == pytest.approx([h["val_loss"] for h in history])
    table, bert = texts
    tuned = headstart.fit(table, str(bert), "contrastive", out=tmp_path / "pairs", max_length=16, cache=False,
                          iterations=1, batch_size=16)
    [csv] = (tmp_path / "pairs" / "logs").glob("version_*/metrics.csv")
    assert pd.read_csv(csv)["pair_stage/loss"].tolist() == pytest.approx(
        tuned.manifest.training["pair_stage"]["losses"])


def test_pretrain_logs_its_loss_to_tensorboard(images, tmp_path):
    _needs("tensorboard")
    from headstart.pretraining import pretrain

    result = pretrain(images, "autoencoder", "smallcnn", out=tmp_path / "ae", max_steps=3, image_size=16,
                      batch_size=12, logger="tensorboard")  # 3 batches an epoch: Lightning logs every 3rd step
    [logged] = _scalars(tmp_path / "ae.run" / "logs")["loss"]
    assert [3, pytest.approx(logged, abs=1e-5)] in result.pretraining["loss_curve"]


@pytest.mark.parametrize("logger, modules", [("tensorboard", ("tensorboard", "tensorboardX")), ("mlflow", ("mlflow",))])
def test_a_missing_logger_package_is_one_line_naming_what_to_install(texts, tmp_path, monkeypatch, logger, modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(HeadstartError, match=rf"--logger {logger} needs the {modules[0]} package: pip install "
                                             rf"{modules[0]}"):
        _probe(texts, tmp_path / "run", logger=logger)
    assert not (tmp_path / "run").exists()  # refused before any work
    table, bert = texts
    result = CliRunner().invoke(app, ["pretrain", str(table), "--objective", "mlm", "--backbone", str(bert), "--out",
                                      str(tmp_path / "mlm"), "--logger", logger])
    assert result.exit_code == 2 and f"pip install {modules[0]}" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_unknown_logger_or_one_without_a_run_folder_is_refused(texts):
    with pytest.raises(HeadstartError, match="must be one of csv, tensorboard, mlflow"):
        _probe(texts, None, logger="wandb")
    with pytest.raises(HeadstartError, match="pass out="):
        _probe(texts, None, logger="tensorboard")
