"""What test_ddp.py, test_distributed.py and test_predict_out.py run on two ranks: each scenario is a function here,
so that the torchrun launch (this file as its script, `python -m torch.distributed.run ... _on_two_ranks.py SET
ROOT`, SET one of `SCENARIOS`) and the pytest process (where a test computes a one-process reference) run the very
same code.

One launch runs a test module's scenarios in turn in the same two ranks: the ranks' start-up (torch, Lightning,
transformers, gloo's rendezvous) is most of each scenario's time, so paying it once instead of once per test saves
most of a module's time. Each scenario writes its own folder under ROOT, and a command's printed output goes to
files of its own per rank (NAME.rankR.stdout and .stderr), as a launch of its own would print it."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

# Texts of different lengths, so that a rank's batch is padded differently from the combined one.
GOOD = ["wonderful", "great", "delightful", "excellent", "lovely", "superb"]
BAD = ["terrible", "awful", "boring", "dreadful", "dull", "tedious"]
LOOP_TEXTS = [f"a {'very ' * (i % 4)}{(GOOD if i % 2 else BAD)[i % 6]} film, number {i}" for i in range(36)]
# 26 texts of different lengths: three whole global batches of 8 an epoch (the last 2 texts sit it out).
PRETRAIN_TEXTS = "".join(f"a {'very ' * (i % 4)}good or bad film, number {i}\n" for i in range(26))


@contextlib.contextmanager
def one_thread():
    """One thread for torch and the BLAS and OpenMP pools in this process, as each rank has (OMP_NUM_THREADS=1): a
    one-process reference is then computed as a launched process of its own would compute it. It is faster, too, on
    a 2-core machine shared with other processes, where a second thread makes each tiny step wait for a core."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


def rank() -> int:
    from headstart import distributed

    return distributed.rank()


def finetune_loop(bert: Path, out: Path, batch_size: int) -> None:
    """train_end_to_end on 26 training texts (three global batches of 8 and a last one of 2, one text per rank),
    2 epochs; writes rankR.npz (the weights of last.ckpt as this rank reads it) and rankR.json (the summary)."""
    import numpy as np
    import torch

    from headstart.backbones import resolve_backbone
    from headstart.heads import Classifier, LinearHead
    from headstart.strategies.finetune import FineTune
    from headstart.strategies.finetune_trainer import train_end_to_end
    from headstart.training import make_logger

    labels = np.arange(36) % 2

    def split(a, b):
        return SimpleNamespace(items=LOOP_TEXTS[a:b], labels=labels[a:b])

    csv_log = make_logger("csv", out)  # what a TrainingRun makes by default (one per run)
    run = SimpleNamespace(train=split(0, 26), val=split(26, 36), seed=3, run_dir=out, resume=False, precision="fp32",
                          metrics_logger=lambda: csv_log)
    torch.manual_seed(0)
    backbone = resolve_backbone(str(bert), max_length=32)
    classifier = Classifier(backbone, LinearHead(backbone.embedding_dim, 2, dropout=0.0))
    settings = FineTune(epochs=2, batch_size=batch_size, label_smoothing=0.0, warmup_fraction=0.0)
    summary = train_end_to_end(classifier, run, settings, lr=3e-3, lr_ratio=1.0)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    np.savez(out / f"rank{rank()}.npz", **{k: v.numpy() for k, v in last.items()})
    (out / f"rank{rank()}.json").write_text(json.dumps(summary))


def _fixed_masks(self, batch):
    """Every text masked at positions 2 and 4: masks that depend neither on the batch nor on the rank (mlm's own are
    drawn at random per batch, and per rank), and as many masked tokens in every text, so that the global batch's
    mean over its masked tokens is the mean of the ranks' equal parts."""
    import torch

    padded = self.backbone.tokenizer.pad(batch, return_tensors="pt")
    ids, labels = padded["input_ids"].clone(), torch.full_like(padded["input_ids"], -100)
    labels[:, [2, 4]] = ids[:, [2, 4]]
    ids[:, [2, 4]] = self.backbone.tokenizer.mask_token_id
    return {"input_ids": ids, "attention_mask": padded["attention_mask"], "labels": labels}


def pretraining(bert: Path, texts: Path, out: Path, batch_size: int) -> None:
    """mlm pretraining with fixed masks, 2 epochs; writes out/backbone and rankR.json (the manifest it returned)."""
    from headstart.pretraining import mlm
    from headstart.pretraining.runner import pretrain

    with mock.patch.object(mlm.MaskedLanguageModel, "collate", _fixed_masks):
        result = pretrain(texts, "mlm", str(bert), out=out / "backbone", epochs=2, batch_size=batch_size, lr=3e-3,
                          max_length=32, precision="fp32", seed=3)
    (out / f"rank{rank()}.json").write_text(json.dumps(result.manifest))


def command(name: str, root: Path, *args: object, cache: str | None = None) -> int:
    """`headstart ARGS` (the console script's main) in this process, its embedding cache ROOT/cache-NAME (or that of
    command CACHE), its printed output in ROOT/NAME.rankR.stdout and .stderr; returns its exit code (also written to
    NAME.rankR.code)."""
    from headstart.cli import main

    files = {stream: root / f"{name}.rank{rank()}.{stream}" for stream in ("stdout", "stderr")}
    argv = ["headstart", *map(str, args)]
    with (mock.patch.dict(os.environ, {"HEADSTART_CACHE": str(root / f"cache-{cache or name}")}),
          mock.patch.object(sys, "argv", argv), open(files["stdout"], "w") as out, open(files["stderr"], "w") as err,
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    (root / f"{name}.rank{rank()}.code").write_text(str(code))
    return code


def printed(root: Path, name: str, stream: str) -> str:
    """What command NAME printed on `stream` on every rank that ran it, rank 0's first."""
    return "".join(p.read_text() for p in sorted(root.glob(f"{name}.rank*.{stream}")))


def finetune_command(table: Path, bert: Path) -> tuple[object, ...]:
    """The fit of the kill-and-restart test, 3 epochs of global batches of 8 (without --out)."""
    return ("fit", table, "--backbone", bert, "--strategy", "finetune", "--epochs", "3", "--batch-size", "4",
            "--max-length", "32", "--precision", "fp32", "--no-calibrate")


def contrastive_command(table: Path, bert: Path, batch_size: int, out: Path) -> tuple[object, ...]:
    return ("fit", table, "--backbone", bert, "--strategy", "contrastive", "--iterations", "2", "--lr", "1e-3",
            "--max-length", "32", "--precision", "fp32", "--no-calibrate", "--batch-size", batch_size, "--out", out)


def lora_command(table: Path, bert: Path, out: Path) -> tuple[object, ...]:
    return ("fit", table, "--backbone", bert, "--strategy", "lora", "--epochs", "2", "--max-length", "32",
            "--precision", "fp32", "--out", out)


def ddp(root: Path) -> None:
    """test_ddp.py's scenarios, batch B per rank; ROOT holds the inputs the test made (test_ddp.ranks_root)."""
    inputs = json.loads((root / "inputs.json").read_text())
    bert, bert_with_dropout, table, texts = (Path(inputs[k]) for k in ("bert", "bert_with_dropout", "table", "texts"))
    # First, in ranks that have run nothing yet, as the launch of its own it is compared with would be.
    command("keep", root, *finetune_command(table, bert_with_dropout), "--out", root / "keep")
    command("lora", root, *lora_command(table, bert_with_dropout, root / "lora"))
    command("contrastive", root, *contrastive_command(table, bert, 4, root / "contrastive-two"))
    finetune_loop(bert, root / "loop-two", batch_size=4)
    pretraining(bert, texts, root / "pretrain-two", batch_size=4)


EMBEDDED_TEXTS = [f"text number {i}" for i in range(7)]


def embed_every_way(folder: Path) -> None:
    """minilm embeddings of 7 texts with a shared cache, with one that rank 1 cannot write to, and without one;
    writes each rank's rows as MODE-rankR.npy."""
    import numpy as np

    from headstart.backbones import resolve_backbone
    from headstart.embedding_cache import EmbeddingCache
    from headstart.embeddings import embed_items

    backbone = resolve_backbone("minilm")
    for mode in ("shared", "unwritable", "none"):
        cache = None if mode == "none" else EmbeddingCache(mode, root=folder / "cache")
        if mode == "unwritable" and rank() == 1:
            cache.disabled = True  # as after a failed write: its rows must reach rank 0 another way
        out, failures = embed_items(backbone, EMBEDDED_TEXTS, cache, "fp32")
        assert failures == []
        np.save(folder / f"{mode}-rank{rank()}.npy", out)


def probe_command(table: Path, out: Path) -> tuple[object, ...]:
    # fp32: a row's numbers do not depend on which other items share its batch (bfloat16's rounding can).
    return ("fit", table, "--backbone", "minilm", "--strategy", "probe", "--precision", "fp32", "--out", out)


def distributed(root: Path) -> None:
    """test_distributed.py's scenarios; ROOT holds the inputs the test made (test_distributed.ranks_root)."""
    inputs = json.loads((root / "inputs.json").read_text())
    table = Path(inputs["table"])
    command("fit", root, *probe_command(table, root / "two"))
    command("evaluate", root, "evaluate", root / "two", table, "--json", cache="fit")  # the fit's cache
    (root / "embedded").mkdir(exist_ok=True)  # by both ranks
    embed_every_way(root / "embedded")
    # Last, as nothing is meant to run after a failed command: rank 0 fails (the run folder is a file).
    command("taken", root, "fit", inputs["small_table"], "--backbone", "minilm", "--out", inputs["taken"])


def write_predictions_on_ranks(folder: Path) -> None:
    """write_prediction_file on 23 items with each rank's records from across_ranks (fake records, test_predict_out's):
    rank 0 writes folder/p.jsonl; each rank writes the items it was asked for, seen-R.json."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: the fake records are a test's
    from headstart.runtime.prediction_files import across_ranks, write_prediction_file
    from tests.test_predict_out import fake_records

    seen = []

    def records_for(chunk):
        seen.extend(chunk)
        return fake_records(chunk)

    write_prediction_file(folder / "p.jsonl", [str(i) for i in range(23)], across_ranks(records_for), settings={},
                          chunk_items=5)
    (folder / f"seen-{rank()}.json").write_text(json.dumps(seen))


def predict_command(model: Path, inputs: Path, *out: object) -> tuple[object, ...]:
    return ("predict", model, inputs, "--chunk-size", "4", *out)


def predict(root: Path) -> None:
    """test_predict_out.py's scenarios; ROOT holds the inputs the test made (test_predict_out.ranks_root)."""
    inputs = json.loads((root / "inputs.json").read_text())
    model, texts = Path(inputs["model"]), Path(inputs["inputs"])
    (root / "writer").mkdir(exist_ok=True)  # by both ranks
    write_predictions_on_ranks(root / "writer")
    # The embedding cache the one-process run filled before the launch, as one after the other would share it.
    command("predict-out", root, *predict_command(model, texts, "--out", root / "out" / "two.jsonl"), cache="predict")
    command("predict-stdout", root, *predict_command(model, texts), cache="predict")


SCENARIOS = {"ddp": ddp, "distributed": distributed, "predict": predict}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](Path(sys.argv[2]))
