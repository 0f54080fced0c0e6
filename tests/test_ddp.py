"""finetune and lora under torchrun (Lightning DDP on gloo, loopback): two ranks with batch B train exactly as one
process with batch 2B; each rank takes its own part of every global batch; rank 0 alone writes the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from headstart.training import RankShare

from .conftest import HANG_GUARD_S, make_tiny_bert, write_text_table
from .test_distributed import _environment, _free_port, headstart, needs_gloo, needs_minilm


class Order(torch.utils.data.Sampler):
    """A stand-in for an epoch's seeded order: a permutation that depends on the epoch."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch)).tolist())


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 24, 26, 29])
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_together_take_the_batches_of_one_process_with_the_global_batch(n, ranks):
    per_rank = 4
    order = Order(n)
    shares = [RankShare(order, per_rank, ranks, of) for of in range(ranks)]
    for share in shares:
        share.set_epoch(3)  # passed on to the order: every rank's share comes from epoch 3's permutation
    epoch_order = list(order)
    assert epoch_order == torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()
    batches = [[b.tolist() for b in torch.utils.data.DataLoader(list(s), batch_size=per_rank)] for s in shares]
    assert len({len(b) for b in batches}) == 1  # every rank makes the same number of steps (no all-reduce waits)
    assert [len(s) for s in shares] == [len(list(s)) for s in shares]
    global_batch = per_rank * ranks
    for k, together in enumerate(zip(*batches)):
        assert all(together)  # no rank has an empty batch
        joined = [i for part in together for i in part]
        assert joined == epoch_order[k * global_batch:(k + 1) * global_batch]  # one process's batch k, in order
    taken = [i for b in batches for batch in b for i in batch]
    assert len(taken) == len(set(taken))  # no item repeated to even out the ranks
    assert len(taken) == (n if n % global_batch == 0 or n % global_batch >= ranks else n - n % global_batch)


TRAIN_ON_RANKS = """
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from headstart import distributed
from headstart.backbones import resolve_backbone
from headstart.heads import Classifier, LinearHead
from headstart.strategies.finetune import FineTune
from headstart.strategies.finetune_trainer import train_end_to_end
from headstart.training import make_logger

bert, out, batch_size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
good = ["wonderful", "great", "delightful", "excellent", "lovely", "superb"]
bad = ["terrible", "awful", "boring", "dreadful", "dull", "tedious"]
# Texts of different lengths, so that a rank's batch is padded differently from the combined one.
texts = [f"a {'very ' * (i % 4)}{(good if i % 2 else bad)[i % 6]} film, number {i}" for i in range(36)]
labels = np.arange(36) % 2
split = lambda a, b: SimpleNamespace(items=texts[a:b], labels=labels[a:b])
# 26 training texts: three global batches of 8 and a last one of 2 (one text per rank).
csv_log = make_logger("csv", out)  # what a TrainingRun makes by default (one per run)
run = SimpleNamespace(train=split(0, 26), val=split(26, 36), seed=3, run_dir=out, resume=False, precision="fp32",
                      metrics_logger=lambda: csv_log)
torch.manual_seed(0)
backbone = resolve_backbone(str(bert), max_length=32)
classifier = Classifier(backbone, LinearHead(backbone.embedding_dim, 2, dropout=0.0))
settings = FineTune(epochs=2, batch_size=batch_size, label_smoothing=0.0, warmup_fraction=0.0)
summary = train_end_to_end(classifier, run, settings, lr=3e-3, lr_ratio=1.0)
last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
np.savez(out / f"rank{distributed.rank()}.npz", **{k: v.numpy() for k, v in last.items()})
(out / f"rank{distributed.rank()}.json").write_text(json.dumps(summary))
"""


def _train(script: Path, bert: Path, out: Path, batch_size: int, processes: int) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1",
                "--master-port", str(_free_port())] if processes > 1 else []
    # A generous limit, far above the seconds this takes, only so that a hung rendezvous cannot hang the suite.
    return subprocess.run([sys.executable, *launcher, str(script), str(bert), str(out), str(batch_size)],
                          env=_environment(out.parent / "cache"), capture_output=True, text=True, timeout=HANG_GUARD_S)


@needs_gloo
@needs_minilm
def test_two_ranks_with_batch_b_end_with_the_weights_of_one_process_with_batch_2b(tmp_path):
    bert = make_tiny_bert(tmp_path / "tiny-bert", dropout=0.0)  # no dropout: the same network on every split
    script = tmp_path / "train.py"
    script.write_text(TRAIN_ON_RANKS)
    alone = _train(script, bert, tmp_path / "one", batch_size=8, processes=1)
    assert alone.returncode == 0, alone.stderr
    both = _train(script, bert, tmp_path / "two", batch_size=4, processes=2)
    assert both.returncode == 0, both.stderr

    one = np.load(tmp_path / "one" / "rank0.npz")
    start = {k: v.numpy() for k, v in starting_weights(bert).items()}
    assert max(np.abs(one[k] - start[k]).max() for k in start) > 1e-3  # training moved the weights
    for rank in (0, 1):  # both ranks read the checkpoint rank 0 wrote
        two = np.load(tmp_path / "two" / f"rank{rank}.npz")
        assert sorted(two.files) == sorted(one.files)
        for key in one.files:
            np.testing.assert_allclose(two[key], one[key], atol=2e-5, err_msg=key)
    summaries = [json.loads((tmp_path / run / "rank0.json").read_text()) for run in ("one", "two")]
    for key in ("best_val_score", "epochs_run", "steps"):
        assert summaries[1][key] == summaries[0][key], key
    assert summaries[0]["steps"] == 2 * 4  # 26 texts in global batches of 8: 4 steps an epoch
    # One set of run files: rank 0's checkpoints and logs.
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list((tmp_path / "two" / "logs").iterdir())) == 1


def starting_weights(bert: Path) -> dict[str, torch.Tensor]:
    """The weights train.py starts from (its seed, its head), to see that training changed them."""
    from headstart.backbones import resolve_backbone
    from headstart.heads import Classifier, LinearHead

    torch.manual_seed(0)
    backbone = resolve_backbone(str(bert), max_length=32)
    classifier = Classifier(backbone, LinearHead(backbone.embedding_dim, 2, dropout=0.0))
    return {f"classifier.{k}": v for k, v in classifier.state_dict().items()}


@needs_gloo
@needs_minilm
def test_lora_under_torchrun_writes_one_run_from_rank_0(tmp_path):
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    result = headstart("fit", table, "--backbone", bert, "--strategy", "lora", "--epochs", "2", "--max-length", "32",
                       "--precision", "fp32", "--out", tmp_path / "run", cache=tmp_path / "cache", processes=2)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "headstart-run.json", "logs",
                                                      "metrics.json", "model"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert result.stdout.count("saved model to") == 1
    manifest = json.loads((run / "model" / "headstart.json").read_text())
    assert manifest["training"]["finetune"]["steps"] == 2  # 28 texts, fewer than 2 ranks x 32: one step an epoch
    assert manifest["metrics"]["n"] == 8


FIT_KILLING_RANK_1 = """
import os
import signal
import sys

from headstart.cli import main
from headstart.strategies.finetune_trainer import FineTuneModule

started = FineTuneModule.on_train_batch_start


def on_train_batch_start(self, batch, batch_idx):
    # kill -9 of rank 1 in the middle of epoch 2, on the first attempt only (torchrun's restart runs on).
    if (os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0" and self.current_epoch == 1
            and batch_idx == 2):
        os.kill(os.getpid(), signal.SIGKILL)
    return started(self, batch, batch_idx)


if sys.argv[1] == "kill":
    FineTuneModule.on_train_batch_start = on_train_batch_start
sys.argv = ["headstart", *sys.argv[2:]]
main()
"""


@pytest.mark.slow
@needs_gloo
@needs_minilm
def test_a_rank_killed_in_epoch_2_restarts_from_the_last_checkpoint_and_ends_as_if_uninterrupted(tmp_path):
    bert = make_tiny_bert(tmp_path / "tiny-bert")  # with dropout: its random numbers too must resume exactly
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    script = tmp_path / "fit.py"
    script.write_text(FIT_KILLING_RANK_1)
    fit = ("fit", table, "--backbone", bert, "--strategy", "finetune", "--epochs", "3", "--batch-size", "4",
           "--max-length", "32", "--precision", "fp32", "--no-calibrate")
    runs = {}
    for mode in ("kill", "keep"):
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", "1",
                  "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script), mode, *fit,
                  "--out", tmp_path / mode]
        # A generous limit, far above the seconds this takes, only so that a hung restart cannot hang the suite.
        runs[mode] = subprocess.run(list(map(str, launch)), env=_environment(tmp_path / "cache"), capture_output=True,
                                    text=True, timeout=HANG_GUARD_S)
        assert runs[mode].returncode == 0, runs[mode].stderr
    assert "torchrun restarted the run: continuing from" in runs["kill"].stderr
    assert "torchrun restarted the run" not in runs["keep"].stderr
    killed, kept = (json.loads((tmp_path / mode / "metrics.json").read_text()) for mode in ("kill", "keep"))
    killed.pop("timings"), kept.pop("timings")
    assert killed == kept
    trained = [json.loads((tmp_path / mode / "model" / "headstart.json").read_text())["training"]["finetune"]
               for mode in ("kill", "keep")]
    assert trained[0] == {**trained[1], "best_checkpoint": trained[0]["best_checkpoint"]}
    assert trained[1]["steps"] == 3 * 4  # 28 texts in global batches of 8: 4 steps an epoch, none repeated
    # The restarted attempt (Lightning's second log) trained epochs 2 and 3 only: epoch 1 came from last.ckpt.
    logged = [np.unique(np.loadtxt(tmp_path / "kill" / "logs" / version / "metrics.csv", delimiter=",", skiprows=1,
                                   usecols=0)).tolist() for version in ("version_0", "version_1")]
    assert logged == [[0], [1, 2]]


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(model_dir / "model.safetensors")


@needs_gloo
@needs_minilm
def test_contrastive_on_two_ranks_with_batch_b_ends_as_one_process_with_batch_2b(tmp_path):
    bert = make_tiny_bert(tmp_path / "tiny-bert", dropout=0.0)  # no dropout: the same network on every split
    table = write_text_table(tmp_path / "reviews.csv", n_per_class=20)
    fit = ("fit", table, "--backbone", bert, "--strategy", "contrastive", "--iterations", "2", "--lr", "1e-3",
           "--max-length", "32", "--precision", "fp32", "--no-calibrate")
    alone = headstart(*fit, "--batch-size", "8", "--out", tmp_path / "one", cache=tmp_path / "cache-one")
    assert alone.returncode == 0, alone.stderr
    both = headstart(*fit, "--batch-size", "4", "--out", tmp_path / "two", cache=tmp_path / "cache-two", processes=2)
    assert both.returncode == 0, both.stderr

    records = [json.loads((tmp_path / run / "model" / "headstart.json").read_text())["training"]
               for run in ("one", "two")]
    pairs = [r["pair_stage"] for r in records]
    assert pairs[0]["pairs"] == pairs[1]["pairs"] == 2 * 2 * 28  # 28 training texts, 2 iterations
    assert pairs[0]["steps"] == pairs[1]["steps"] == 2 * 2 * 28 // 8  # global batches of 8 pairs, none repeated
    np.testing.assert_allclose(pairs[1]["losses"], pairs[0]["losses"], atol=2e-5)  # the global batch's loss
    one, two = _weights(tmp_path / "one" / "model"), _weights(tmp_path / "two" / "model")
    start = {k: v.numpy() for k, v in starting_weights(bert).items()}
    encoder = [k for k in one if k.startswith("backbone.")]
    assert encoder and max(np.abs(one[k] - start[f"classifier.{k}"]).max() for k in encoder) > 1e-3  # it trained
    assert sorted(two) == sorted(one)
    for key in one:  # the tuned encoder and the logistic-regression head fitted on its (sharded) embeddings
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, err_msg=key)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("one", "two")]
    assert metrics[1]["n"] == metrics[0]["n"] and metrics[1]["accuracy"] == metrics[0]["accuracy"]
    # One set of run files, written by rank 0.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["config.yaml", "headstart-run.json", "logs",
                                                                    "metrics.json", "model"]
    assert len(list(((tmp_path / "two") / "logs").iterdir())) == 1  # one log, rank 0's
    assert both.stdout.count("saved model to") == 1


PRETRAIN_ON_RANKS = """
import json
import sys
from pathlib import Path

import torch

from headstart import distributed
from headstart.pretraining import mlm
from headstart.pretraining.runner import pretrain

bert, data, out, batch_size = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])


def fixed_masks(self, batch):
    # Every text masked at positions 2 and 4: masks that depend neither on the batch nor on the rank (mlm's own are
    # drawn at random per batch, and per rank), and as many masked tokens in every text, so that the global batch's
    # mean over its masked tokens is the mean of the ranks' equal parts.
    padded = self.backbone.tokenizer.pad(batch, return_tensors="pt")
    ids, labels = padded["input_ids"].clone(), torch.full_like(padded["input_ids"], -100)
    labels[:, [2, 4]] = ids[:, [2, 4]]
    ids[:, [2, 4]] = self.backbone.tokenizer.mask_token_id
    return {"input_ids": ids, "attention_mask": padded["attention_mask"], "labels": labels}


mlm.MaskedLanguageModel.collate = fixed_masks
result = pretrain(data, "mlm", str(bert), out=out / "backbone", epochs=2, batch_size=batch_size, lr=3e-3,
                  max_length=32, precision="fp32", seed=3)
(out / f"rank{distributed.rank()}.json").write_text(json.dumps(result.manifest))
"""


@needs_gloo
@needs_minilm
def test_pretraining_on_two_ranks_with_batch_b_ends_as_one_process_with_batch_2b(tmp_path):
    from safetensors.numpy import load_file

    bert = make_tiny_bert(tmp_path / "tiny-bert", dropout=0.0)  # no dropout: the same network on every split
    texts = tmp_path / "texts.txt"
    # 26 texts of different lengths: three whole global batches of 8 an epoch (the last 2 texts sit it out).
    texts.write_text("".join(f"a {'very ' * (i % 4)}good or bad film, number {i}\n" for i in range(26)))
    script = tmp_path / "pretrain.py"
    script.write_text(PRETRAIN_ON_RANKS)
    for run, batch_size, processes in (("one", 8, 1), ("two", 4, 2)):
        launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1",
                    "--master-port", str(_free_port())] if processes > 1 else []
        # A generous limit, far above the seconds this takes, only so that a hung rendezvous cannot hang the suite.
        done = subprocess.run([sys.executable, *launcher, str(script), str(bert), str(texts), str(tmp_path / run),
                               str(batch_size)], env=_environment(tmp_path / "cache"), capture_output=True, text=True,
                              timeout=HANG_GUARD_S)
        assert done.returncode == 0, done.stderr

    one, two = (load_file(tmp_path / run / "backbone" / "backbone.safetensors") for run in ("one", "two"))
    start = load_file(bert / "model.safetensors")  # the encoder's, without the backbone's "model." prefix
    assert max(np.abs(one[f"model.{k}"] - start[k]).max() for k in start) > 1e-3  # training moved the weights
    assert sorted(two) == sorted(one)
    for key in one:
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, err_msg=key)
    alone, ranks = (json.loads((tmp_path / run / "rank0.json").read_text())["pretraining"] for run in ("one", "two"))
    assert alone["steps"] == ranks["steps"] == 2 * 3 and alone["samples_seen"] == ranks["samples_seen"] == 48
    assert (alone["processes"], ranks["processes"]) == (1, 2)
    np.testing.assert_allclose(np.array(ranks["loss_curve"]), np.array(alone["loss_curve"]), atol=1e-5)
    # Rank 0 wrote the one backbone folder and run folder, and both ranks return its manifest.
    assert json.loads((tmp_path / "two" / "rank1.json").read_text())["pretraining"] == ranks
    run_dir = tmp_path / "two" / "backbone.run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "headstart-run.json", "logs"]
    assert [p.name for p in (run_dir / "logs").iterdir()] == ["version_0"]
    assert json.loads((run_dir / "headstart-run.json").read_text())["config"]["batch_size"] == 8  # the global batch
