"""kill -9 at any point of a save leaves the previous model or the new one, loadable, with its own metrics; and
kill -9 during finetune followed by --resume ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import headstart

from .conftest import HANG_GUARD_S, make_image_folder

SAVE_CHILD = r"""
import os, shutil, sys
from pathlib import Path
import headstart
from headstart import _util, artifact

run, point = Path(sys.argv[1]), sys.argv[2]
model = headstart.load(run / "model")
model.manifest = model.manifest.model_copy(update={"metrics": {**model.metrics, "accuracy": 0.123456}})

def die():
    os.kill(os.getpid(), 9)

calls = {"replace": 0}
real_replace, real_rmtree, real_save = os.replace, shutil.rmtree, artifact.save_weights

def replace(a, b):
    calls["replace"] += 1
    if point == f"before rename {calls['replace']}":
        die()
    real_replace(a, b)

def rmtree(path, *args, **kwargs):
    if point == "before deleting the old model" and ".old-" in str(path):
        die()
    real_rmtree(path, *args, **kwargs)

def save_weights(module, file):
    real_save(module, file)
    if point == "after writing the weights":
        die()

os.replace, shutil.rmtree, artifact.save_weights = replace, rmtree, save_weights
model.save(run / "model")
_util.atomic_symlink(run / "metrics.json", "model/metrics.json")
"""

POINTS = ["after writing the weights", "before rename 1", "before rename 2", "before deleting the old model",
          "before rename 3", "never"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = make_image_folder(root / "images", per_class=6, size=16)
    headstart.fit(data, "efficientnet_lite0", "probe", out=root / "run", image_size=32)
    return root / "run"


@pytest.mark.parametrize("point", POINTS)
def test_kill_during_save_leaves_a_whole_model(point, trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, symlinks=True)
    previous = headstart.load(run / "model").metrics["accuracy"]
    child = subprocess.run([sys.executable, "-c", SAVE_CHILD, str(run), point], capture_output=True, text=True,
                           timeout=HANG_GUARD_S)
    assert child.returncode == (0 if point == "never" else -signal.SIGKILL), child.stderr[-2000:]
    model = headstart.load(run / "model")  # recovers a save killed between its renames
    accuracy = model.metrics["accuracy"]
    expected = 0.123456 if point in ("before deleting the old model", "before rename 3", "never") else previous
    assert accuracy == expected
    assert json.loads((run / "model" / "metrics.json").read_text())["accuracy"] == accuracy
    assert json.loads((run / "metrics.json").read_text())["accuracy"] == accuracy
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")]
    assert [n for n in leftovers if not n.endswith(".link")] == []  # recovery removed the dead save's folders
    from headstart._util import atomic_symlink

    atomic_symlink(run / "metrics.json", "model/metrics.json")  # the next run's link step removes a dead link
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


RESUME_CHILD = r"""
import os, sys
import headstart
from headstart.strategies.finetune_trainer import FineTuneModule

out, kill_epoch, resume, backbone = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume", sys.argv[5]
step = FineTuneModule.training_step

def training_step(self, batch, i):
    if self.current_epoch == kill_epoch and i == 2:
        os.kill(os.getpid(), 9)
    return step(self, batch, i)

FineTuneModule.training_step = training_step
options = {"image_size": 16} if backbone == "smallcnn" else {"max_length": 16}
headstart.fit(sys.argv[4], backbone, "finetune", out=out, epochs=3, batch_size=16, seed=3, resume=resume, **options)
"""


def _finetune(out: Path, data: Path, kill_epoch: int = -1, resume: bool = False, backbone: str = "smallcnn") -> int:
    env = {**os.environ, "HEADSTART_PROGRESS": "0"}
    args = [sys.executable, "-c", RESUME_CHILD, str(out), str(kill_epoch), "resume" if resume else "fresh", str(data),
            backbone]
    return subprocess.run(args, capture_output=True, text=True, timeout=HANG_GUARD_S, env=env).returncode


@pytest.mark.slow
def test_kill_during_finetune_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=20, size=16)
    assert _finetune(tmp_path / "whole", data) == 0
    assert _finetune(tmp_path / "killed", data, kill_epoch=1) == -signal.SIGKILL
    assert _finetune(tmp_path / "killed", data, resume=True) == 0
    whole = headstart.load(tmp_path / "whole" / "model")
    resumed = headstart.load(tmp_path / "killed" / "model")
    assert resumed.metrics["confusion_matrix"] == whole.metrics["confusion_matrix"]
    assert resumed.manifest.training["finetune"]["best_val_score"] == whole.manifest.training["finetune"][
        "best_val_score"]
    files = sorted((data / "red").glob("*.png"))
    assert resumed.predict_proba(files).tolist() == whole.predict_proba(files).tolist()  # the same weights


@pytest.mark.slow
def test_text_finetune_resumes_exactly_too(tmp_path):
    """The text path: a pre-trained encoder from a folder (head stage first), length-grouped batches, dropout in the
    encoder. A tiny BERT takes the same path as minilm (the same Hugging Face loader and trainer); the test's time
    is mostly its three child processes' imports either way (35 s against 38 s with minilm)."""
    from .conftest import make_tiny_bert, write_text_table

    data = write_text_table(tmp_path / "reviews.csv", n_per_class=40)
    bert = str(make_tiny_bert(tmp_path / "tiny-bert", dropout=0.1))
    assert _finetune(tmp_path / "whole", data, backbone=bert) == 0
    assert _finetune(tmp_path / "killed", data, kill_epoch=1, backbone=bert) == -signal.SIGKILL
    assert _finetune(tmp_path / "killed", data, resume=True, backbone=bert) == 0
    whole = headstart.load(tmp_path / "whole" / "model")
    resumed = headstart.load(tmp_path / "killed" / "model")
    texts = ["a wonderful and moving film", "a dull and painful film", "a film"]
    assert resumed.predict_proba(texts).tolist() == whole.predict_proba(texts).tolist()
    assert resumed.metrics["confusion_matrix"] == whole.metrics["confusion_matrix"]
