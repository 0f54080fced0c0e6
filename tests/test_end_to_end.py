"""End-to-end runs on real data (marked slow; they run in CI and skip when ../shared/datasets is absent)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import headstart

from .conftest import HANG_GUARD_S, shared_dataset

pytestmark = pytest.mark.slow


def test_quickstart_walks_the_whole_path(tmp_path):
    exe = Path(sys.executable).with_name("headstart")
    env = {**os.environ, "HEADSTART_PROGRESS": "0"}
    # The timeout only catches a hung process: the quickstart takes about a minute on two cores, and a machine
    # loaded several times over (a CI runner, a shared box) can stretch that many times, which is not a failure.
    result = subprocess.run([str(exe), "quickstart", "--out", str(tmp_path / "qs")], capture_output=True, text=True,
                            env=env, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predictions identical to the trained model: True" in " ".join(result.stdout.split())
    assert "quickstart done in" in result.stdout
    assert "Next steps" in result.stdout
    for name in ("smallcnn", "efficientnet_lite0"):
        assert (tmp_path / "qs" / name / "model" / "model.safetensors").is_file()
    assert len(list((tmp_path / "qs" / "examples").glob("*.png"))) == 5


def test_sst2_probe_with_minilm_beats_chance_clearly(tmp_path):
    train = shared_dataset("text/sst2/train.csv")
    model = headstart.fit(train, "minilm", "probe", out=tmp_path / "run", labels_per_class=150, test_size=100)
    dev = headstart.evaluate(tmp_path / "run" / "model", train.with_name("dev.csv"))
    assert dev["n"] == 872 and dev["accuracy"] >= 0.7
    assert model.metrics["accuracy"] >= 0.65


def test_cifar10_probe_with_efficientnet_lite0(tmp_path):
    folder = shared_dataset("images/cifar10/train")
    model = headstart.fit(folder, "efficientnet_lite0", "probe", out=tmp_path / "run", labels_per_class=20,
                          test_size=300, image_size=160)
    assert model.metrics["n"] == 300 and model.metrics["accuracy"] >= 0.55
