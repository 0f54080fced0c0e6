"""select, report, distill and tar shards under torchrun (2 ranks, gloo on loopback): the numbers of one process,
each item once, rank 0 alone printing and writing.

One launch runs every command in turn (each rank calls the command line in-process, its stdout kept in a file
of its own) and the single-process run is made in the test's own process, so that the suite pays for one
torchrun start, not for ten."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from headstart import distributed
from headstart.errors import SettingsError
from headstart.runtime.codec_base import expand_files
from headstart.runtime.image_codec import IMAGE_EXTENSIONS
from headstart.runtime.members import ShardMember

from ._on_two_ranks import one_thread
from .conftest import HANG_GUARD_S, make_tiny_bert, write_text_table
from .test_distributed import OneProcessOnly, _environment, _free_port, headstart, needs_gloo, needs_minilm
from .test_shards import write_shards

COMMANDS = """
import atexit
import contextlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[3])  # the repository: the commands are the test module's
from headstart import distributed
from headstart.cli import app
from tests.test_ddp_commands import commands

root, out = Path(sys.argv[1]), Path(sys.argv[2])


def record_threads(path):
    # Registered before headstart joins the group, so run after its exit handler, which leaves it.
    tasks = Path("/proc/self/task")
    names = [(task / "comm").read_text().strip() for task in tasks.iterdir()] if tasks.exists() else None
    path.write_text(json.dumps(names))


atexit.register(record_threads, out.parent / f"{out.name}-threads.rank{os.environ['RANK']}.json")
rank = distributed.rank()
codes = {}
for name, args in commands(root, out).items():
    with open(out.parent / f"{out.name}-{name}.rank{rank}.out", "w") as f, contextlib.redirect_stdout(f):
        codes[name] = app(args, standalone_mode=False)
(out.parent / f"{out.name}-codes.rank{rank}.json").write_text(json.dumps(codes))
"""


def commands(root: Path, out: Path) -> dict[str, list[str]]:
    """What each run does, in order: the command lines, writing into `out`."""
    given = {
        "select": ["select", root / "reviews.csv", "--backbones", root / "bert", "--json", "--precision", "fp32"],
        "report": ["report", root / "teacher", "--out", out / "report.html"],
        "distill": ["distill", root / "teacher", root / "unlabeled.txt", "--backbone", root / "bert", "--strategy",
                    "probe", "--precision", "fp32", "--out", out / "student"],
        "fit-shards": ["fit", root / "shards", "--backbone", "smallcnn", "--weights", root / "smallcnn.safetensors",
                       "--strategy", "probe", "--precision", "fp32", "--out", out / "shards-run"],
        "predict-shards": ["predict", out / "shards-run" / "model", root / "shards", "--chunk-size", "10",
                           "--out", out / "shards.jsonl"],
    }
    return {name: [str(a) for a in args] for name, args in given.items()}


UNLABELED = [f"a {word} picture, reel {i}" for i, word in
             enumerate(["marvellous", "grim", "charming", "woeful", "splendid", "bleak", "joyful"])]


def _launch_two_ranks(root: Path) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(_free_port())]
    # A generous limit, far above the seconds this takes, only so that a hung rendezvous cannot hang the suite.
    return subprocess.run([sys.executable, *launcher, str(root / "commands.py"), str(root), str(root / "two"),
                           str(Path(__file__).parents[1])], env=_environment(root / "cache-two"),
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def _run_in_this_process(root: Path) -> None:
    """The single-process run, here rather than in a child (one process start less), on one thread as the
    ranks are, with a cache of its own."""
    from typer.testing import CliRunner

    from headstart.cli import app

    with one_thread(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEADSTART_CACHE", str(root / "cache-one"))
        for name, args in commands(root, root / "one").items():
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, (name, result.output)
            (root / f"one-{name}.rank0.out").write_text(result.stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same five commands run by one process ("one") and by two ranks ("two"), each with a cache of its own
    (so that the ranks embed everything themselves)."""
    from safetensors.torch import save_model

    import headstart
    from headstart.backbones.smallcnn import SmallCNN

    root = tmp_path_factory.mktemp("ddp-commands")
    table = write_text_table(root / "reviews.csv", n_per_class=12)
    bert = make_tiny_bert(root / "bert")
    with one_thread():  # faster on a shared 2-core machine (the probe's 600 tiny head steps)
        headstart.fit(table, str(bert), "probe", out=root / "teacher", precision="fp32", cache=False, seed=0)
    (root / "unlabeled.txt").write_text("\n".join(UNLABELED) + "\n")
    write_shards(root / "shards", n_shards=3, per_shard=11)  # 33 items: one rank takes one more
    save_model(SmallCNN(), str(root / "smallcnn.safetensors"))
    (root / "commands.py").write_text(COMMANDS)
    _run_in_this_process(root)
    result = _launch_two_ranks(root)
    assert result.returncode == 0, result.stderr
    for rank in range(2):
        codes = json.loads((root / f"two-codes.rank{rank}.json").read_text())
        assert set(codes.values()) <= {0, None}, (codes, result.stderr)  # each command ended well on each rank
    return root


def _stdout(runs: Path, name: str, command: str, rank: int = 0) -> str:
    return (runs / f"{name}-{command}.rank{rank}.out").read_text()


def _metrics(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("timings")
    return metrics


@needs_gloo
@needs_minilm
def test_select_on_two_ranks_scores_as_one_process_and_rank_0_alone_prints(runs):
    one, two = (json.loads(_stdout(runs, name, "select")) for name in ("one", "two"))
    assert _stdout(runs, "two", "select", rank=1) == ""  # the other rank kept quiet
    for single, ranked in zip(one["ranking"], two["ranking"]):
        for key in ("backbone", "logme", "knn_accuracy", "items", "cache_hits", "cache_misses"):
            assert ranked[key] == pytest.approx(single[key], abs=1e-9), key
    assert two["items"] == one["items"] == 24 and two["ranking"][0]["cache_misses"] == 24  # every item embedded once


@needs_gloo
@needs_minilm
def test_report_on_two_ranks_is_the_single_process_page_written_once(runs):
    # Matplotlib names an SVG's clip paths, markers and images at random: those names aside, the pages are the
    # same to the byte.
    one, two = (re.sub(r'(id="|#)(p|m|image)[0-9a-f]{10}\b', r"\1ID", (runs / name / "report.html").read_text())
                for name in ("one", "two"))
    assert two == one  # the same metrics, intervals, mistakes and figures
    assert "accuracy" in two
    assert _stdout(runs, "two", "report").count("wrote") == 1 and _stdout(runs, "two", "report", rank=1) == ""


@needs_gloo
@needs_minilm
def test_distill_on_two_ranks_labels_and_trains_as_one_process(runs):
    one, two = (runs / name / "student" for name in ("one", "two"))
    assert _metrics(two) == _metrics(one)
    records = [json.loads((folder / "model" / "headstart.json").read_text())["data"]["distillation"]
               for folder in (one, two)]
    assert records[1] == records[0] and records[1]["pseudo_labeled"] == len(UNLABELED)  # each item labeled once
    assert sorted(p.name for p in two.iterdir()) == ["config.yaml", "headstart-run.json", "logs", "metrics.json",
                                                        "model"]
    assert len(list((two / "logs").iterdir())) == 1  # one log, rank 0's
    assert _stdout(runs, "two", "distill", rank=1) == ""


@needs_gloo
@needs_minilm
def test_a_probe_on_tar_shards_and_its_predictions_on_two_ranks_are_those_of_one_process(runs):
    one, two = (runs / name for name in ("one", "two"))
    assert _metrics(two / "shards-run") == _metrics(one / "shards-run")
    single, ranked = ([json.loads(line) for line in (run / "shards.jsonl").read_text().splitlines()]
                      for run in (one, two))
    members = [f"{shard}:{s:03d}{i:05d}.png" for s in range(3) for i in range(11)
               for shard in [runs / "shards" / f"shard-{s:03d}.tar"]]
    assert [r["input"] for r in ranked] == members  # one record per member, in shard and member order
    assert [r["label"] for r in ranked] == [r["label"] for r in single]
    assert [r["score"] for r in ranked] == pytest.approx([r["score"] for r in single], abs=1e-6)


@needs_gloo
@needs_minilm
def test_the_ranks_end_the_group_and_its_threads_before_the_interpreter_shuts_down(runs):
    # The commands imported transformers after joining the group, and with it FSDP, whose default arguments would
    # keep the group alive past headstart's exit handler: its threads would then still run while the interpreter
    # shuts down, where one of them now and then aborted a rank that had done all its work.
    for rank in range(2):
        threads = json.loads((runs / f"two-threads.rank{rank}.json").read_text())
        if threads is None:
            pytest.skip("this system lists no process's threads (/proc/self/task)")
        assert "pt_gloo_runloop" not in threads and "gloo_tcp_loop" not in threads, threads


def test_a_shard_folder_or_a_tar_file_names_its_members_in_order(tmp_path):
    shards = write_shards(tmp_path / "shards", n_shards=2, per_shard=3)
    members = expand_files(str(tmp_path / "shards"), IMAGE_EXTENSIONS, "image", "")
    assert all(isinstance(m, ShardMember) for m in members)
    assert [m.name for m in members] == [f"{s:03d}{i:05d}.png" for s in range(2) for i in range(3)]
    assert expand_files(str(shards[1]), IMAGE_EXTENSIONS, "image", "") == members[3:]
    assert members[4].read()[:4] == b"\x89PNG"


def test_distill_under_torchrun_refuses_a_student_strategy_without_ddp_before_labeling(monkeypatch, tmp_path):
    from headstart.distillation import distill

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    # The teacher is not even read: the refusal comes first.
    with pytest.raises(SettingsError, match=r"student strategy one-process-only does not run on several processes"
                                            r".*probe"):
        distill(tmp_path / "no-teacher", tmp_path / "no-data.txt", strategy=OneProcessOnly())


@needs_gloo
@needs_minilm
def test_fit_with_processes_2_relaunches_itself_under_torchrun_with_the_single_process_metrics(runs):
    result = headstart("fit", runs / "shards", "--backbone", "smallcnn", "--weights", runs / "smallcnn.safetensors",
                       "--strategy", "probe", "--precision", "fp32", "--processes", "2", "--out", runs / "processes",
                       cache=runs / "cache-processes")
    assert result.returncode == 0, result.stderr
    assert _metrics(runs / "processes") == _metrics(runs / "one" / "shards-run")
    assert result.stdout.count("saved model to") == 1  # rank 0's output alone
    log = " ".join(result.stderr.split())  # as one line, however the log wrapped it
    assert "23 of 23 items not cached (12 of them here, rank 0)" in log  # 23 training items: two ranks embedded them


def test_processes_drops_itself_from_the_command_line_it_hands_to_torchrun(monkeypatch):
    from typer.testing import CliRunner

    from headstart.cli import app

    launched = []
    monkeypatch.setattr(distributed, "run_as_processes", lambda n, arguments: launched.append((n, arguments)) or 3)
    arguments = ["fit", "data.csv", "--processes", "4", "--epochs", "2"]
    monkeypatch.setattr(sys, "argv", ["headstart", *arguments])
    assert CliRunner().invoke(app, arguments).exit_code == 3  # torchrun's exit code
    assert launched == [(4, ["fit", "data.csv", "--epochs", "2"])]
    monkeypatch.setattr(distributed, "launched", lambda: True)  # as a rank of a torchrun job ...
    monkeypatch.setattr(distributed, "is_main", lambda: True)  # ... rank 0, which says why
    refused = CliRunner().invoke(app, arguments)
    assert refused.exit_code == 2 and "under torchrun leave it out" in refused.stderr
