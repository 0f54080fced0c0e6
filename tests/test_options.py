"""Option objects and the command line made from them: a plug-in strategy's settings reach `fit` from the command
line and from a config file, a run's own RUN/config.yaml repeats it, and a wrong key is one line."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.errors import SettingsError
from headstart.heads import Classifier, LinearHead
from headstart.options import BackboneOptions, RunOptions, split_size
from headstart.settings import setting
from headstart.strategies import STRATEGIES, Strategy, TrainingRun, register_strategy

from .test_plugins import plugins  # noqa: F401  (the toy colour backbone)

runner = CliRunner()


def run(*args: Any):
    return runner.invoke(app, [str(a) for a in args])


def test_fit_takes_few_parameters_and_the_options_are_checked_on_creation():
    assert len(inspect.signature(headstart.fit).parameters) <= 8
    with pytest.raises(SettingsError, match=r"precision \(--precision\) must be one of auto, fp32, bf16"):
        RunOptions(precision="fp16")
    with pytest.raises(SettingsError, match=r"image_size \(--image-size\) must be a whole number >= 1"):
        BackboneOptions(image_size=0)
    with pytest.raises(SettingsError, match=r"split size must be a fraction like 0\.2 or a count like 500"):
        split_size("a lot")


@dataclass
class ScaledCentroid(Strategy):
    """A toy strategy with one setting of its own: class means of the embeddings, scaled."""

    name = "toy_scaled"
    scale: float = setting(1.0, "toy_scaled: how much the centroid logits are scaled.")

    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        train_x, _ = run.embed_splits()
        head = LinearHead(train_x.shape[1], len(run.classes), dropout=0.0)
        x = torch.from_numpy(train_x)
        head.standardize.fit(x)
        z, y = head.standardize(x), torch.from_numpy(run.train.labels)
        centroids = torch.stack([z[y == c].mean(0) for c in range(len(run.classes))])
        with torch.no_grad():
            head.layers[1].weight.copy_(centroids * self.scale)
            head.layers[1].bias.zero_()
        return Classifier(run.backbone, head), {}


@pytest.fixture
def toy_strategy(plugins):  # noqa: F811
    register_strategy(ScaledCentroid)
    yield
    STRATEGIES.pop("toy_scaled")


def _settings(run_dir) -> dict[str, Any]:
    return json.loads((run_dir / "model" / "headstart.json").read_text())["strategy"]["settings"]


def test_a_plugin_strategy_is_set_from_the_command_line_and_from_a_config_file(toy_strategy, shared_image_folder,
                                                                               tmp_path):
    help_text = " ".join(run("fit", "--help").output.replace("│", " ").split())
    assert "--scale" in help_text and "how much the centroid logits" in help_text
    common = ["--backbone", "toy-colour", "--strategy", "toy_scaled", "--no-calibrate"]
    result = run("fit", shared_image_folder, *common, "--scale", "2.5", "--out", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    assert _settings(tmp_path / "cli")["scale"] == 2.5
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": str(shared_image_folder), "backbone": "toy-colour",
                                      "strategy": "toy_scaled", "scale": 3.0, "calibrate": False,
                                      "out": str(tmp_path / "file")}))
    assert run("fit", "--config", config).exit_code == 0
    assert _settings(tmp_path / "file")["scale"] == 3.0
    result = run("fit", "--config", config, "--scale", "4", "--out", tmp_path / "over")  # the command line wins
    assert result.exit_code == 0, result.output
    assert _settings(tmp_path / "over")["scale"] == 4.0


def _metrics(run_dir) -> dict[str, Any]:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k != "timings"}


def test_a_run_repeated_from_its_own_config_gives_the_same_metrics(toy_strategy, shared_image_folder, tmp_path):
    first = tmp_path / "first"
    result = run("fit", shared_image_folder, "--backbone", "toy-colour", "--strategy", "toy_scaled", "--scale", "0.5",
                 "--seed", "3", "--val-size", "0.25", "--test-size", "6", "--out", first)
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((first / "config.yaml").read_text())
    assert recorded["scale"] == 0.5 and recorded["seed"] == 3 and recorded["strategy"] == "toy_scaled"
    assert recorded["calibrate"] is True and recorded["test_size"] == "6"  # defaults are written out too
    again = tmp_path / "again"
    result = run("fit", "--config", first / "config.yaml", "--out", again)
    assert result.exit_code == 0, result.output
    assert _metrics(again) == _metrics(first) and _metrics(first)["n"] == 6
    assert yaml.safe_load((again / "config.yaml").read_text()) == {**recorded, "out": str(again)}
    other = tmp_path / "other"  # the check can fail: another seed splits otherwise
    assert run("fit", "--config", first / "config.yaml", "--seed", "4", "--out", other).exit_code == 0
    assert yaml.safe_load((other / "config.yaml").read_text())["seed"] == 4


def test_an_unknown_key_in_a_config_file_is_one_line_naming_it_and_the_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: digits\nepochs: 2\nepoch_count: 3\n")
    result = run("fit", "--config", config)
    assert result.exit_code == 2
    assert "unknown option 'epoch_count'" in result.output and "run.yaml" in result.output


def test_pretrain_reads_a_config_file_and_writes_its_own(tmp_path, monkeypatch):
    import headstart.pretraining

    calls = []

    def pretrain(data, objective, backbone, **options):  # the command line's work, not the training
        calls.append((data, objective, backbone, options))
        out = options["out"]
        return SimpleNamespace(pretraining={"steps": 1, "samples_seen": 8, "stopped_by": "max_steps",
                                            "train_seconds": 0.1, "first_loss": 1.0, "final_loss": 0.5,
                                            "loss_plot": "loss_curve.png", "run_dir": str(out) + ".run"})

    monkeypatch.setattr(headstart.pretraining, "pretrain", pretrain)
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump({"data": "unlabeled/", "objective": "autoencoder", "backbone": "smallcnn",
                                      "image-size": 16, "batch_size": 8, "max_steps": 1, "denoise": True,
                                      "from": "pretrained", "out": str(tmp_path / "ae")}))
    result = run("pretrain", "--config", config, "--seed", "2")
    assert result.exit_code == 0, result.output
    [(data, objective, backbone, options)] = calls
    assert (data, objective, backbone.name, backbone.image_size) == ("unlabeled/", "autoencoder", "smallcnn", 16)
    assert options["schedule"].max_steps == 1 and options["schedule"].from_weights == "pretrained"
    assert options["denoise"] is True and options["run_options"].seed == 2
    recorded = yaml.safe_load((tmp_path / "ae.run" / "config.yaml").read_text())
    assert recorded["max_steps"] == 1 and recorded["denoise"] is True and recorded["seed"] == 2
    assert recorded["from_weights"] == "pretrained" and recorded["mask_ratio"] == 0.5
