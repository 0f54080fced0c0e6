"""finetune and lora under torchrun (Lightning DDP on gloo, loopback): two ranks with batch B train exactly as one
process with batch 2B; each rank takes its own part of every global batch; rank 0 alone writes the run.

The two-rank runs share one torchrun launch (the module's `ranks_root`, scenarios in _on_two_ranks.py), and the
one-process references they are compared with run in this process: each child's start-up is most of its time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from headstart.training import RankShare

from . import _on_two_ranks as scenarios
from .conftest import HANG_GUARD_S, make_tiny_bert, write_text_table
from .test_distributed import _environment, _free_port, launch_scenarios, launched, needs_gloo, needs_minilm


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


@pytest.fixture(scope="module")
def ranks_root(tmp_path_factory) -> Path:
    """Every two-rank scenario of this module (_on_two_ranks.ddp) in one torchrun launch: ROOT with their
    folders, their printed output, and launch.json (the launch's exit code and stderr). The tests below each check
    their own scenario's part."""
    root = tmp_path_factory.mktemp("ddp")
    inputs = {"bert": make_tiny_bert(root / "tiny-bert", dropout=0.0),  # no dropout: the same network on every split
              # with dropout: the kill-and-restart test's, whose random numbers too must resume exactly
              "bert_with_dropout": make_tiny_bert(root / "tiny-bert-dropout"),
              "table": write_text_table(root / "reviews.csv", n_per_class=20), "texts": root / "texts.txt"}
    inputs["texts"].write_text(scenarios.PRETRAIN_TEXTS)
    (root / "inputs.json").write_text(json.dumps({k: str(v) for k, v in inputs.items()}))
    return launch_scenarios("ddp", root)


@needs_gloo
@needs_minilm
def test_two_ranks_with_batch_b_end_with_the_weights_of_one_process_with_batch_2b(ranks_root, tmp_path):
    """The same training loop, once in two ranks with batch 4 (the module's launch) and once here, in one process
    with batch 8: the same weights on both ranks, the same summary, and rank 0's run files alone."""
    launched(ranks_root)
    bert = ranks_root / "tiny-bert"
    with scenarios.one_thread():
        scenarios.finetune_loop(bert, tmp_path / "one", batch_size=8)
    two_ranks = ranks_root / "loop-two"

    one = np.load(tmp_path / "one" / "rank0.npz")
    start = {k: v.numpy() for k, v in starting_weights(bert).items()}
    assert max(np.abs(one[k] - start[k]).max() for k in start) > 1e-3  # training moved the weights
    for rank in (0, 1):  # both ranks read the checkpoint rank 0 wrote
        two = np.load(two_ranks / f"rank{rank}.npz")
        assert sorted(two.files) == sorted(one.files)
        for key in one.files:
            np.testing.assert_allclose(two[key], one[key], atol=2e-5, err_msg=key)
    summaries = [json.loads((run / "rank0.json").read_text()) for run in (tmp_path / "one", two_ranks)]
    for key in ("best_val_score", "epochs_run", "steps"):
        assert summaries[1][key] == summaries[0][key], key
    assert summaries[0]["steps"] == 2 * 4  # 26 texts in global batches of 8: 4 steps an epoch
    # One set of run files: rank 0's checkpoints and logs.
    assert sorted(p.name for p in (two_ranks / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list((two_ranks / "logs").iterdir())) == 1


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
def test_lora_under_torchrun_writes_one_run_from_rank_0(ranks_root):
    launched(ranks_root, "lora")
    run = ranks_root / "lora"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "headstart-run.json", "logs",
                                                      "metrics.json", "model"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert scenarios.printed(ranks_root, "lora", "stdout").count("saved model to") == 1
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
def test_a_rank_killed_in_epoch_2_restarts_from_the_last_checkpoint_and_ends_as_if_uninterrupted(ranks_root, tmp_path):
    """A launch whose rank 1 is killed in epoch 2 (torchrun restarts both ranks) against the same fit on two ranks
    uninterrupted (the module's launch, "keep", the first thing its ranks run): the same metrics and training record."""
    launched(ranks_root, "keep")
    inputs = json.loads((ranks_root / "inputs.json").read_text())
    script = tmp_path / "fit.py"
    script.write_text(FIT_KILLING_RANK_1)
    fit = scenarios.finetune_command(inputs["table"], inputs["bert_with_dropout"])
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", "1",
              "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script), "kill", *fit,
              "--out", tmp_path / "kill"]
    # A generous limit, far above the seconds this takes, only so that a hung restart cannot hang the suite.
    kill = subprocess.run(list(map(str, launch)), env=_environment(tmp_path / "cache"), capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    assert kill.returncode == 0, kill.stderr
    assert "torchrun restarted the run: continuing from" in kill.stderr
    assert "torchrun restarted the run" not in scenarios.printed(ranks_root, "keep", "stderr")
    runs = {"kill": tmp_path / "kill", "keep": ranks_root / "keep"}
    killed, kept = (json.loads((runs[mode] / "metrics.json").read_text()) for mode in ("kill", "keep"))
    killed.pop("timings"), kept.pop("timings")
    assert killed == kept
    trained = [json.loads((runs[mode] / "model" / "headstart.json").read_text())["training"]["finetune"]
               for mode in ("kill", "keep")]
    assert trained[0] == {**trained[1], "best_checkpoint": trained[0]["best_checkpoint"]}
    assert trained[1]["steps"] == 3 * 4  # 28 texts in global batches of 8: 4 steps an epoch, none repeated
    # The restarted attempt (Lightning's second log) trained epochs 2 and 3 only: epoch 1 came from last.ckpt.
    logged = [np.unique(np.loadtxt(runs["kill"] / "logs" / version / "metrics.csv", delimiter=",", skiprows=1,
                                   usecols=0)).tolist() for version in ("version_0", "version_1")]
    assert logged == [[0], [1, 2]]


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(model_dir / "model.safetensors")


@needs_gloo
@needs_minilm
def test_contrastive_on_two_ranks_with_batch_b_ends_as_one_process_with_batch_2b(ranks_root, tmp_path):
    """`headstart fit --strategy contrastive` on two ranks with batch 4 (the module's launch) and here, in one process
    with batch 8: the same pairs, losses and weights, and one set of run files, rank 0's."""
    launched(ranks_root, "contrastive")
    inputs = json.loads((ranks_root / "inputs.json").read_text())
    bert = Path(inputs["bert"])
    with scenarios.one_thread():
        alone = scenarios.command("contrastive-one", tmp_path,
                                  *scenarios.contrastive_command(inputs["table"], bert, 8, tmp_path / "one"))
    assert alone == 0, scenarios.printed(tmp_path, "contrastive-one", "stderr")
    runs = {"one": tmp_path / "one", "two": ranks_root / "contrastive-two"}

    records = [json.loads((runs[run] / "model" / "headstart.json").read_text())["training"] for run in ("one", "two")]
    pairs = [r["pair_stage"] for r in records]
    assert pairs[0]["pairs"] == pairs[1]["pairs"] == 2 * 2 * 28  # 28 training texts, 2 iterations
    assert pairs[0]["steps"] == pairs[1]["steps"] == 2 * 2 * 28 // 8  # global batches of 8 pairs, none repeated
    np.testing.assert_allclose(pairs[1]["losses"], pairs[0]["losses"], atol=2e-5)  # the global batch's loss
    one, two = _weights(runs["one"] / "model"), _weights(runs["two"] / "model")
    start = {k: v.numpy() for k, v in starting_weights(bert).items()}
    encoder = [k for k in one if k.startswith("backbone.")]
    assert encoder and max(np.abs(one[k] - start[f"classifier.{k}"]).max() for k in encoder) > 1e-3  # it trained
    assert sorted(two) == sorted(one)
    for key in one:  # the tuned encoder and the logistic-regression head fitted on its (sharded) embeddings
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, err_msg=key)
    metrics = [json.loads((runs[run] / "metrics.json").read_text()) for run in ("one", "two")]
    assert metrics[1]["n"] == metrics[0]["n"] and metrics[1]["accuracy"] == metrics[0]["accuracy"]
    # One set of run files, written by rank 0.
    assert sorted(p.name for p in runs["two"].iterdir()) == ["config.yaml", "headstart-run.json", "logs",
                                                             "metrics.json", "model"]
    assert len(list((runs["two"] / "logs").iterdir())) == 1  # one log, rank 0's
    assert scenarios.printed(ranks_root, "contrastive", "stdout").count("saved model to") == 1


@needs_gloo
@needs_minilm
def test_pretraining_on_two_ranks_with_batch_b_ends_as_one_process_with_batch_2b(ranks_root, tmp_path):
    """mlm pretraining (fixed masks) on two ranks with batch 4 (the module's launch) and here, in one process with
    batch 8: the same backbone and loss curve, one backbone folder and run folder written by rank 0."""
    from safetensors.numpy import load_file

    launched(ranks_root)
    bert = ranks_root / "tiny-bert"
    with scenarios.one_thread():  # 26 texts: three whole global batches of 8 an epoch (the last 2 texts sit it out)
        scenarios.pretraining(bert, ranks_root / "texts.txt", tmp_path / "one", batch_size=8)
    runs = {"one": tmp_path / "one", "two": ranks_root / "pretrain-two"}

    one, two = (load_file(runs[run] / "backbone" / "backbone.safetensors") for run in ("one", "two"))
    start = load_file(bert / "model.safetensors")  # the encoder's, without the backbone's "model." prefix
    assert max(np.abs(one[f"model.{k}"] - start[k]).max() for k in start) > 1e-3  # training moved the weights
    assert sorted(two) == sorted(one)
    for key in one:
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, err_msg=key)
    alone, ranks = (json.loads((runs[run] / "rank0.json").read_text())["pretraining"] for run in ("one", "two"))
    assert alone["steps"] == ranks["steps"] == 2 * 3 and alone["samples_seen"] == ranks["samples_seen"] == 48
    assert (alone["processes"], ranks["processes"]) == (1, 2)
    np.testing.assert_allclose(np.array(ranks["loss_curve"]), np.array(alone["loss_curve"]), atol=1e-5)
    # Rank 0 wrote the one backbone folder and run folder, and both ranks return its manifest.
    assert json.loads((runs["two"] / "rank1.json").read_text())["pretraining"] == ranks
    run_dir = runs["two"] / "backbone.run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "headstart-run.json", "logs"]
    assert [p.name for p in (run_dir / "logs").iterdir()] == ["version_0"]
    assert json.loads((run_dir / "headstart-run.json").read_text())["config"]["batch_size"] == 8  # the global batch
