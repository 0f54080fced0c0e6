"""The training loop shared by every objective: Lightning with a progress bar (loss, samples/s), checkpoints
for `--resume`, bfloat16 autocast where the CPU has it, and budgets in epochs, steps and minutes.

Each epoch's order depends only on (seed, epoch) (`EpochOrder`), so that a resumed run sees the batches an
uninterrupted one would. Under torchrun it trains with Lightning's DDP, configured as finetune's stage 2 is
(training.device_settings): `batch_size` is per process, each rank takes its contiguous part of every whole global
batch of the epoch's order (training.rank_loader), gradients are averaged over the ranks, the per-step loss
recorded is the global batch's, and rank 0 alone writes checkpoints and logs."""

from __future__ import annotations

import io
import logging
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch

from .. import distributed
from .._util import worker_count
from ..modalities.base import EpochOrder  # the objectives' datasets take plain indices
from ..progress import lightning_progress, quiet_lightning
from ..training import check_checkpoint, device_settings, lightning_precision, make_logger, rank_loader
from .base import Objective

log = logging.getLogger(__name__)


class PretrainModule(L.LightningModule):
    """Optimises `objective.loss` with AdamW; the learning rate warms up, then decays along a cosine that ends
    when the first budget (steps or minutes) runs out.

    The schedule is applied by hand in `on_train_batch_start` instead of a LambdaLR: a step-indexed scheduler
    cannot know when a time budget will stop training, and without that the rate would still be high at the end.
    """

    def __init__(self, objective: Objective, lr: float, weight_decay: float, total_steps: int,
                 max_seconds: float | None, warmup_fraction: float = 0.05):
        super().__init__()
        self.objective = objective
        self.lr = lr
        self.weight_decay = weight_decay
        self.total_steps = max(1, total_steps)
        self.max_seconds = max_seconds
        self.warmup_steps = max(1, min(500, int(warmup_fraction * self.total_steps)))
        self.losses: list[tuple[int, float]] = []  # (step, loss) for every optimiser step, kept in checkpoints
        self._seen = 0
        self._tick: float | None = None
        self._rate: float | None = None

    def progress(self) -> float:
        """Fraction of the budget used: the larger of steps and elapsed time (Lightning's Timer, resume-safe)."""
        fraction = self.global_step / self.total_steps
        if self.max_seconds:
            timer = next((c for c in self.trainer.callbacks if isinstance(c, L.pytorch.callbacks.Timer)), None)
            if timer is not None:
                fraction = max(fraction, timer.time_elapsed("train") / self.max_seconds)
            # Rank 0's clock on every rank: the ranks' learning rates must not drift apart.
            fraction = self.trainer.strategy.broadcast(fraction)
        return min(1.0, fraction)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        if step < self.warmup_steps:
            factor = (step + 1) / self.warmup_steps
        else:
            factor = 0.5 * (1 + math.cos(math.pi * self.progress()))
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = self.lr * max(factor, 0.01)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.objective.loss(batch)
        # The global batch's loss: the mean of the ranks' equal parts (a copy, as the all-reduce works in place);
        # this rank's own with one process. Tested for being finite on every rank alike, so that all stop together.
        whole = self.trainer.strategy.reduce(loss.detach().clone(), reduce_op="mean")
        if not torch.isfinite(whole):
            raise FloatingPointError(f"loss is {whole.item()} at step {self.global_step}: lower --lr")
        n = self.objective.batch_size_of(batch) * self.trainer.world_size
        now = time.perf_counter()
        if self._tick is not None:
            rate = n / max(now - self._tick, 1e-9)
            self._rate = rate if self._rate is None else 0.9 * self._rate + 0.1 * rate
        self._tick = now
        self.losses.append((int(self.global_step) + 1, float(whole)))
        self.log("loss", whole, prog_bar=True)
        if self._rate is not None:
            self.log("samples/s", self._rate, prog_bar=True)
        return loss

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.objective.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)  # no weight decay on biases and norms
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=self.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["headstart_losses"] = [list(x) for x in self.losses]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.losses = [(int(s), float(v)) for s, v in checkpoint.get("headstart_losses", [])]


def make_loader(objective: Objective, dataset: torch.utils.data.Dataset, batch_size: int, seed: int):
    """Whole batches of `batch_size` in each epoch's seeded order; under torchrun, this rank's part of every whole
    global batch (batch_size x processes)."""
    workers = worker_count() if objective.decode_in_workers else 0
    ranks = distributed.world_size()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size * ranks, sampler=EpochOrder(len(dataset), seed),
                                         drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                                         collate_fn=objective.collate, generator=torch.Generator().manual_seed(seed))
    return rank_loader(loader, batch_size, ranks, distributed.rank()) if ranks > 1 else loader


def train(objective: Objective, dataset: torch.utils.data.Dataset, run_dir: Path, *, batch_size: int, lr: float,
          epochs: int, max_steps: int | None, max_minutes: float | None, precision: str, seed: int,
          resume: bool, weight_decay: float = 0.05, checkpoint_minutes: float = 5.0, logger: str = "csv"
          ) -> dict[str, Any]:
    """Train in place, the curves written through `logger` (training.LOGGERS) under `run_dir`; returns steps,
    epochs, time, the stop reason and the per-step losses."""
    from lightning.pytorch.callbacks import ModelCheckpoint, Timer

    L.seed_everything(seed, workers=True, verbose=False)
    torch.manual_seed(distributed.own_seed(seed))  # each rank its own masks and noise (rank 0: as one process)
    loader = make_loader(objective, dataset, batch_size, seed)
    planned = epochs * len(loader)
    total_steps = min(planned, max_steps) if max_steps else planned
    max_seconds = max_minutes * 60 if max_minutes else None
    module = PretrainModule(objective, lr, weight_decay, total_steps, max_seconds)
    ckpt_dir = run_dir / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, enable_version_counter=False,
                                 train_time_interval=timedelta(minutes=checkpoint_minutes))
    callbacks: list[L.Callback] = [checkpoint]
    if max_minutes:
        callbacks.append(Timer(duration=timedelta(minutes=max_minutes), interval="step"))
    last = ckpt_dir / "last.ckpt"
    started = time.perf_counter()
    objective.train()
    if resume:
        # Lightning makes the first resumed epoch's batches before it tells the sampler the epoch: tell it now.
        loader.sampler.set_epoch(check_checkpoint(last, module))
    progress, show_bar = lightning_progress("pretraining") if distributed.is_main() else ([], False)
    with quiet_lightning():
        trainer = L.Trainer(
            max_epochs=epochs, max_steps=max_steps or -1, **device_settings(),
            precision=lightning_precision(precision), callbacks=[*callbacks, *progress],
            logger=make_logger(logger, run_dir) or False, enable_model_summary=False, enable_progress_bar=show_bar,
            default_root_dir=run_dir, log_every_n_steps=max(1, min(50, len(loader))), num_sanity_val_steps=0,
            limit_val_batches=0, use_distributed_sampler=False,  # the loader takes this rank's part itself
        )
        trainer.fit(module, loader, ckpt_path=str(last) if resume else None, weights_only=True)
        seconds = time.perf_counter() - started
        trainer.save_checkpoint(last, weights_only=False)  # the final state: `--resume` with a larger budget extends it
    objective.cpu().eval()
    timer = next((c for c in callbacks if isinstance(c, Timer)), None)
    if trainer.interrupted:
        stopped = "interrupted"
    elif max_steps and trainer.global_step >= max_steps:
        stopped = "steps"
    elif timer is not None and max_seconds and timer.time_elapsed("train") >= max_seconds:
        stopped = "time budget"
    else:
        stopped = "epochs"
    return {"steps": int(trainer.global_step), "epochs": int(trainer.current_epoch), "batches_per_epoch": len(loader),
            "train_seconds": round(seconds, 1), "stopped_by": stopped,
            "precision": lightning_precision(precision), "losses": module.losses}


def downsample_curve(losses: list[tuple[int, float]], points: int = 300) -> list[list[float]]:
    """Window means of the per-step losses: at most `points` [step, loss] pairs for the manifest and plot."""
    if not losses:
        return []
    window = max(1, math.ceil(len(losses) / points))
    curve = []
    for i in range(0, len(losses), window):
        chunk = losses[i: i + window]
        curve.append([chunk[-1][0], round(sum(v for _, v in chunk) / len(chunk), 6)])
    return curve


def plot_loss_curve(curve: list[list[float]], title: str) -> bytes:
    """A PNG of loss against step (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    if curve:
        ax.plot([s for s, _ in curve], [v for _, v in curve], lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


__all__ = ["PretrainModule", "downsample_curve", "plot_loss_curve", "train"]
