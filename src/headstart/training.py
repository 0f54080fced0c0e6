"""Settings shared by the Lightning training loops (finetune's and lora's stage 2, and pretraining), without
importing Lightning until a Trainer is configured: precision, checkpoints to resume from, under torchrun
Lightning's DDP with each rank's share of every global batch (`device_settings`, `rank_loader`), and the logger
the training curves go to (`make_logger`: CSV, TensorBoard or MLflow, also used by the hand-written loops)."""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from ._util import default_device, precision_dtype
from .errors import ArtifactError, HeadstartError
from .settings import check_choice
from .weights import is_pickle_refusal

log = logging.getLogger("headstart")

LOGGERS = ("csv", "tensorboard", "mlflow")
# The modules each logger needs beyond Lightning (any one of them), and the pip package that brings the first.
LOGGER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}
LOGS = "logs"  # RUN/logs: CSV files and TensorBoard events in version_N folders, MLflow's database
MLFLOW_EXPERIMENT = "headstart"  # unless MLFLOW_EXPERIMENT_NAME names another


def lightning_precision(precision: str) -> str:
    """Lightning's precision flag for ours: auto means bfloat16 where the device is fast at it."""
    dtype = precision_dtype(precision, default_device())
    return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}.get(dtype, "32-true")


def check_checkpoint(path: Path, module: nn.Module) -> int:
    """A checkpoint to resume from must load without pickle and hold this model's tensors, shape for shape.
    Returns the number of epochs it completed."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["state_dict"]
        done = int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except Exception as e:
        if is_pickle_refusal(e):
            raise ArtifactError(f"{path} needs pickle to load (it was not written by headstart), and headstart never "
                                "unpickles: delete it and run without --resume") from None
        raise ArtifactError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                            "): delete it and run without --resume") from None
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    if found != expected:
        raise ArtifactError(f"{path} was written for another model (its tensors differ from this run's): run without "
                            "--resume, or give the --out of the interrupted run")
    return done


class RankShare(torch.utils.data.Sampler):
    """This rank's part of each global batch of `epoch_order`'s order: global batch k is items
    [k·G, (k+1)·G) of the order (G = per_rank x ranks), and rank r takes its contiguous share of it (`shard`), so
    that the ranks together take exactly the batches one process with batch size G would, and a resumed run the
    same items as an uninterrupted one (the order still depends only on (seed, epoch); `set_epoch` is passed on).

    Hand-written because DistributedSampler (which Lightning's use_distributed_sampler wraps around a custom
    sampler) deals the order out round-robin over the whole epoch and repeats items to even out the ranks. Here no
    item is repeated: the last, smaller global batch is split as evenly as it goes, and when it has fewer items
    than there are ranks (so that some rank would have no batch and the others would wait for it in the gradient
    all-reduce) those few items sit this epoch out; the next epoch's order is another. With `whole_only` (a loop
    that drops its last, smaller batch) only whole global batches are taken, so every rank's part is per_rank."""

    def __init__(self, epoch_order: torch.utils.data.Sampler, per_rank: int, ranks: int, of: int,
                 whole_only: bool = False):
        self.epoch_order, self.per_rank, self.ranks, self.of = epoch_order, per_rank, ranks, of
        self.whole_only = whole_only

    def set_epoch(self, epoch: int) -> None:
        getattr(self.epoch_order, "set_epoch", lambda epoch: None)(epoch)

    def __len__(self) -> int:
        return sum(len(distributed.shard(range(start, stop), ranks=self.ranks, of=self.of))
                   for start, stop in distributed.global_batches(len(self.epoch_order), self.per_rank, self.ranks,
                                                                       self.whole_only))

    def __iter__(self):
        order = list(self.epoch_order)
        for start, stop in distributed.global_batches(len(order), self.per_rank, self.ranks, self.whole_only):
            yield from distributed.shard(order[start:stop], ranks=self.ranks, of=self.of)


def rank_loader(loader: torch.utils.data.DataLoader, per_rank: int, ranks: int, of: int
                ) -> torch.utils.data.DataLoader:
    """`loader` (built with the global batch size, so that an order grouped by batch, like text's by length, is the
    one a single process with that batch would see) re-made to yield rank `of`'s part of each global batch (only
    whole ones where `loader` drops its last, smaller batch)."""
    return torch.utils.data.DataLoader(
        loader.dataset, batch_size=per_rank, sampler=RankShare(loader.sampler, per_rank, ranks, of, loader.drop_last),
        num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn, drop_last=False)


def device_settings() -> dict[str, Any]:
    """The Trainer's accelerator, devices and strategy: one device in one process; under torchrun DDP over the
    process group headstart.distributed has already joined (Lightning uses an initialised group as it finds it),
    with torchrun's environment telling Lightning the ranks, so that it starts no processes of its own."""
    if not distributed.launched():
        return {"accelerator": "auto", "devices": 1}
    from lightning.pytorch.plugins.environments import TorchElasticEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    world, per_node = distributed.world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    # find_unused_parameters: some backbones hold trainable weights the classifier never uses (a text model's
    # pooler); without it DDP would wait forever for their gradients.
    strategy = DDPStrategy(cluster_environment=TorchElasticEnvironment(), find_unused_parameters=True)
    # A GPU per process (distributed chose NCCL), else CPU: processes sharing a GPU talk over gloo.
    return {"accelerator": "gpu" if distributed.gpu_per_process() else "cpu", "devices": per_node,
            "num_nodes": world // per_node, "strategy": strategy}


def restarted_with_checkpoint(last: Path) -> bool:
    """Whether torchrun restarted this run (a process failed) after it saved `last`: then it continues from there.
    Rank 0's view of the file, so that every rank decides alike. (Known gap: a run that dies before its first
    epoch ends, in a folder still holding an older run's checkpoints, which are cleared only when training
    starts, would continue those after the restart.)"""
    if not distributed.restarted():
        return False
    found = distributed.broadcast_object(last.is_file())
    if found:
        log.info("torchrun restarted the run: continuing from %s", last)
    return found


def check_logger(logger: str) -> None:
    """Refuse an unknown logger, or one whose package is missing, in one line that says what to install: before
    any work, not when the first curve is written."""
    check_choice("logger", logger, LOGGERS)
    modules = LOGGER_MODULES.get(logger, ())
    for module in modules:
        try:
            importlib.import_module(module)
            return
        except ImportError:
            continue
    if modules:
        raise HeadstartError(f"--logger {logger} needs the {modules[0]} package: pip install {modules[0]} (or pip "
                             "install 'headstart[loggers]'), or use --logger csv")


def mlflow_tracking_uri(run_dir: Path) -> str:
    """Where MLflow records: MLFLOW_TRACKING_URI when the user sets it (a server, a database), else a SQLite
    database in RUN/logs, so that nothing leaves the machine unasked. (Not MLflow's file store: MLflow 3 refuses
    it unless MLFLOW_ALLOW_FILE_STORE is set.)"""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / LOGS / 'mlflow.db').resolve()}"


def make_logger(logger: str, run_dir: Path) -> Any | None:
    """The Lightning logger `logger` names, writing the curves of the run in `run_dir`: CSV files and TensorBoard
    event files in RUN/logs/version_N, MLflow a run named after the folder (see `mlflow_tracking_uri`).

    Under torchrun every rank makes a CSV or TensorBoard one, which writes from rank 0 only (Lightning's rule, that
    `CurveLog` follows too); MLflow's opens its store as it is made, so there only rank 0 makes one and the other
    ranks get None (a Trainer then takes `logger=False`)."""
    check_logger(logger)
    if logger == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(run_dir, name=LOGS)
    if logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(run_dir, name=LOGS, default_hp_metric=False)
    if not distributed.is_main():
        return None  # the ranks would all create the database at once
    from lightning.pytorch.loggers import MLFlowLogger

    for noisy in ("alembic", "mlflow.store.db.utils"):  # the database's creation, table by table
        logging.getLogger(noisy).setLevel(logging.WARNING)
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    if local:
        (run_dir / LOGS).mkdir(parents=True, exist_ok=True)
    # With the local database its artifacts stay in the run folder too (MLflow's default is ./mlruns).
    artifacts = str((run_dir / LOGS / "mlartifacts").resolve()) if local else None
    return MLFlowLogger(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or MLFLOW_EXPERIMENT,
                        run_name=run_dir.resolve().name, tracking_uri=mlflow_tracking_uri(run_dir),
                        artifact_location=artifacts)


class CurveLog:
    """The curves of a hand-written loop (the probe's head, contrastive's pair stage) written through the run's
    Lightning logger: `add` a step's metrics; they are written every few seconds and when the block ends, on rank
    0 only, as Lightning writes; without a logger (a run without a folder) nothing is kept.

    Hand-written because Lightning's loggers write a step a call, and MLflow's call is a database transaction
    (about 25 ms: 15 s for the 600 epochs a probe runs on a few dozen items); here MLflow gets one batch of all
    the steps held (`_write_mlflow`), and the other loggers their steps one by one (cheap: buffered files)."""

    MLFLOW_BATCH = 1000  # MLflow's limit on the metrics of one log_batch call

    def __init__(self, logger: Any, every_s: float = 5.0):
        self.logger = logger if distributed.is_main() else None
        self.every_s = every_s
        self.held: list[tuple[int, int, dict[str, float]]] = []  # (step, time in ms, metrics)
        self.written_at = time.monotonic()

    def __enter__(self) -> CurveLog:
        return self

    def __exit__(self, *exception: object) -> None:
        self.write()

    def add(self, metrics: Mapping[str, float], step: int) -> None:
        if self.logger is None:
            return
        self.held.append((step, int(time.time() * 1000), {k: float(v) for k, v in metrics.items()}))
        if time.monotonic() - self.written_at >= self.every_s:
            self.write()

    def write(self) -> None:
        """Write the steps held so far."""
        held, self.held, self.written_at = self.held, [], time.monotonic()
        if not held:
            return
        from lightning.pytorch.loggers import MLFlowLogger

        if isinstance(self.logger, MLFlowLogger):
            self._write_mlflow(held)
            return
        for step, _, metrics in held:
            self.logger.log_metrics(metrics, step)

    def _write_mlflow(self, held: list[tuple[int, int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(key=k, value=v, timestamp=ms, step=step) for step, ms, row in held for k, v in row.items()]
        for start in range(0, len(metrics), self.MLFLOW_BATCH):
            self.logger.experiment.log_batch(run_id=self.logger.run_id,
                                             metrics=metrics[start:start + self.MLFLOW_BATCH])
