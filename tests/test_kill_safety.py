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

from ._on_two_ranks import one_thread
from .conftest import HANG_GUARD_S, make_image_folder

SAVE_CHILD = r"""
import json, os, shutil, sys, traceback
from pathlib import Path
import timm  # noqa: F401  (what loading the run's efficientnet imports: once, here, before the forks)
import headstart
import headstart.backbones.efficientnet_lite  # noqa: F401
from headstart import _util, artifact

def save_killed_at(run, point):
    # In a process of its own (a fork): save the model with new metrics, killed (kill -9) at `point`.
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

# One run folder and one point a process: each save in a fork of this process, which has paid the imports once.
ended = {}
for run, point in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        try:
            save_killed_at(Path(run), point)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    ended[point] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)  # as Popen's returncode
print(json.dumps(ended))
"""

POINTS = ["after writing the weights", "before rename 1", "before rename 2", "before deleting the old model",
          "before rename 3", "never"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = make_image_folder(root / "images", per_class=6, size=16)
    with one_thread():  # see _finetune: the probe's 600 tiny head steps wait for a second core otherwise
        headstart.fit(data, "efficientnet_lite0", "probe", out=root / "run", image_size=32)
    return root / "run"


@pytest.fixture(scope="module")
def saves_killed(trained_run, tmp_path_factory):
    """A copy of the run per point, and a save into it killed (kill -9) at that point: each save in a process of its
    own, forked from one child that imports headstart once. {point: (run folder, the accuracy it had before, the
    save's exit code as Popen's returncode, the child's stderr)}."""
    root = tmp_path_factory.mktemp("killed-saves")
    runs = {point: root / f"run-{i}" for i, point in enumerate(POINTS)}
    before = {}
    for point, run in runs.items():
        shutil.copytree(trained_run, run, symlinks=True)
        before[point] = headstart.load(run / "model").metrics["accuracy"]
    plan = json.dumps([(str(run), point) for point, run in runs.items()])
    child = subprocess.run([sys.executable, "-c", SAVE_CHILD, plan], capture_output=True, text=True,
                           timeout=HANG_GUARD_S, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == 0, child.stderr[-2000:]
    ended = json.loads(child.stdout.splitlines()[-1])
    return {point: (runs[point], before[point], ended[point], child.stderr) for point in POINTS}


@pytest.mark.parametrize("point", POINTS)
def test_kill_during_save_leaves_a_whole_model(point, saves_killed):
    run, previous, returncode, stderr = saves_killed[point]
    assert returncode == (0 if point == "never" else -signal.SIGKILL), stderr[-2000:]
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
import json, os, sys
from pathlib import Path
import headstart
from headstart.strategies.finetune_trainer import FineTuneModule

ended, fits = Path(sys.argv[1]), json.loads(sys.argv[2])
step = FineTuneModule.training_step
kill_epoch = -1

def training_step(self, batch, i):
    if self.current_epoch == kill_epoch and i == 2:
        os.kill(os.getpid(), 9)
    return step(self, batch, i)

FineTuneModule.training_step = training_step
for out, data, backbone, kill_epoch, resume in fits:  # one after the other in this process; a kill ends it
    options = {"image_size": 16} if backbone == "smallcnn" else {"max_length": 16}
    headstart.fit(data, backbone, "finetune", out=out, epochs=3, batch_size=16, seed=3, resume=resume, **options)
    with open(ended, "a") as log:
        log.write(json.dumps([Path(out).name, "resumed" if resume else "fresh"]) + "\n")
"""


def _finetune(ended: Path, *fits: tuple[Path, object, str, int, bool]) -> int:
    """A child process that runs `fits` (run folder, data, backbone, epoch to be killed in or -1, whether to
    --resume) one after the other, each as `headstart.fit` with the same settings, and notes each fit that ended in
    `ended`; returns its exit code."""
    # One thread, as torchrun's ranks have: on a 2-core machine shared with other processes, torch's second thread
    # makes each of the head stage's tiny steps wait for a core (the text test took 69 s with two threads at load 5,
    # 25 s with one). Every run compared here has it, so the comparison is as exact as before.
    env = {**os.environ, "HEADSTART_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    plan = [(str(out), str(data), backbone, kill_epoch, resume) for out, data, backbone, kill_epoch, resume in fits]
    args = [sys.executable, "-c", RESUME_CHILD, str(ended), json.dumps(plan)]
    return subprocess.run(args, capture_output=True, text=True, timeout=HANG_GUARD_S, env=env).returncode


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory):
    """Both resume tests' runs (image: smallcnn on colour images; text: a tiny BERT with dropout), in three
    children rather than one per run: the first runs both uninterrupted fits, then the image fit killed (kill -9)
    in epoch 2; the second resumes the image fit, then runs the text fit killed in epoch 2; the third resumes the
    text fit. A kill ends its process, and a resume starts a new one, as before. Returns ROOT, the children's exit
    codes and the fits that ended ([run folder name, "fresh" or "resumed"])."""
    from .conftest import make_tiny_bert, write_text_table

    root = tmp_path_factory.mktemp("resume")
    image = (make_image_folder(root / "images", per_class=20, size=16), "smallcnn")
    text = (write_text_table(root / "reviews.csv", n_per_class=40), str(make_tiny_bert(root / "tiny-bert", dropout=0.1)))
    ended = root / "ended.jsonl"
    codes = [_finetune(ended, (root / "image-whole", *image, -1, False), (root / "text-whole", *text, -1, False),
                       (root / "image-killed", *image, 1, False)),
             _finetune(ended, (root / "image-killed", *image, -1, True), (root / "text-killed", *text, 1, False)),
             _finetune(ended, (root / "text-killed", *text, -1, True))]
    return root, codes, [tuple(json.loads(line)) for line in ended.read_text().splitlines()]


@pytest.mark.slow
def test_kill_during_finetune_then_resume_ends_like_an_uninterrupted_run(resume_runs):
    root, codes, ended = resume_runs
    assert ("image-whole", "fresh") in ended and ("image-killed", "fresh") not in ended
    assert codes[0] == -signal.SIGKILL  # the image fit killed in epoch 2, the first child's last fit
    assert ("image-killed", "resumed") in ended  # the resume, the second child's first fit, ended well
    whole = headstart.load(root / "image-whole" / "model")
    resumed = headstart.load(root / "image-killed" / "model")
    assert resumed.metrics["confusion_matrix"] == whole.metrics["confusion_matrix"]
    assert resumed.manifest.training["finetune"]["best_val_score"] == whole.manifest.training["finetune"][
        "best_val_score"]
    files = sorted((root / "images" / "red").glob("*.png"))
    assert resumed.predict_proba(files).tolist() == whole.predict_proba(files).tolist()  # the same weights


@pytest.mark.slow
def test_text_finetune_resumes_exactly_too(resume_runs):
    """The text path: a pre-trained encoder from a folder (head stage first), length-grouped batches, dropout in the
    encoder. A tiny BERT takes the same path as minilm (the same Hugging Face loader and trainer); the test's time
    is mostly its child processes' imports either way (35 s against 38 s with minilm, when each run had a child)."""
    root, codes, ended = resume_runs
    assert ("text-whole", "fresh") in ended and ("text-killed", "fresh") not in ended
    assert codes[1:] == [-signal.SIGKILL, 0]  # killed in epoch 2 (the second child's last fit), then resumed
    assert ("text-killed", "resumed") in ended
    whole = headstart.load(root / "text-whole" / "model")
    resumed = headstart.load(root / "text-killed" / "model")
    texts = ["a wonderful and moving film", "a dull and painful film", "a film"]
    assert resumed.predict_proba(texts).tolist() == whole.predict_proba(texts).tolist()
    assert resumed.metrics["confusion_matrix"] == whole.metrics["confusion_matrix"]
