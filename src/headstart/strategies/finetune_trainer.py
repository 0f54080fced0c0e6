"""Stage 2 of `finetune` on Lightning: the whole network, discriminative learning rates, warm-up then cosine
decay, early stopping on the task's validation score (accuracy, mAP, R²), the best checkpoint kept, `resume` from
the last one.

Under torchrun (several processes) it trains with Lightning's DDP on the process group headstart.distributed has
joined: gradients are all-reduced, each rank takes its own part of every global batch of the epoch's seeded order
(`RankShare`), `--batch-size` is per process (the global batch is batch_size x processes), every rank validates on
the whole validation split, and only rank 0 writes checkpoints and logs (through the run's logger: CSV by
default, TensorBoard or MLflow with --logger)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch

from .. import distributed
from ..errors import HeadstartError
from ..heads import Classifier
from ..modalities import get_modality
from ..modalities.base import epoch_seed
from ..progress import lightning_progress, quiet_lightning
from ..training import check_checkpoint, device_settings, lightning_precision, rank_loader, restarted_with_checkpoint
from .base import TrainingRun

log = logging.getLogger("headstart")


class EndToEndSettings(Protocol):
    """What stage 2 reads of the strategy's settings (FineTune has them)."""

    epochs: int
    batch_size: int
    weight_decay: float
    warmup_fraction: float
    patience: int
    label_smoothing: float


def discriminative_groups(classifier: Classifier, lr: float, lr_ratio: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups: backbone layer groups with geometrically rising rates, then the head."""
    groups = [g for g in classifier.backbone.layer_groups() if g]
    n = len(groups)
    rates = [lr / lr_ratio ** ((n - 1 - k) / max(1, n - 1)) for k in range(n)]
    param_groups = [{"params": g, "lr": r, "weight_decay": weight_decay} for g, r in zip(groups, rates)]
    param_groups.append({"params": list(classifier.head.parameters()), "lr": lr, "weight_decay": weight_decay})
    return param_groups


class FineTuneModule(L.LightningModule):
    """Trains a Classifier end to end; logs `val_loss` and the task's validation score each epoch."""

    def __init__(self, classifier: Classifier, lr: float, lr_ratio: float, settings: EndToEndSettings, total_steps: int,
                 seed: int = 0, class_weight: torch.Tensor | None = None):
        super().__init__()
        self.seed = seed
        self.classifier = classifier
        self.lr, self.lr_ratio = lr, lr_ratio
        self.settings = settings
        self.total_steps = total_steps
        # Class weights as a plain attribute, moved to the batch's device at each use: in nn.CrossEntropyLoss they
        # would be a buffer, and checkpoints (which --resume checks tensor by tensor) would change with them.
        self.class_weight = class_weight
        self.label_smoothing = settings.label_smoothing
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _weights(self, logits: torch.Tensor) -> torch.Tensor | None:
        return None if self.class_weight is None else self.class_weight.to(logits.device, logits.dtype)

    def forward(self, x: Any) -> torch.Tensor:
        return self.classifier(x)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Dropout's random numbers depend only on (seed, epoch): a resumed run repeats an uninterrupted one.
        (At the first batch rather than in on_train_epoch_start, which Lightning skips in a resumed epoch.)"""
        if batch_idx == 0:
            torch.manual_seed(epoch_seed(self.seed, self.current_epoch) + 7)

    def training_step(self, batch: Sequence, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self.classifier(x)
        loss = self.classifier.head.loss(logits, y, self._weights(logits), self.label_smoothing)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Sequence, batch_idx: int) -> None:
        self._val.append((self.classifier(batch[0]).float().cpu(), batch[1].cpu()))

    def on_validation_epoch_end(self) -> None:
        """The validation loss over all batches, weighted as the training loss is (so that it measures the
        objective being trained), and the task's validation score (accuracy, mAP, R²), which early stopping and
        the best checkpoint watch; the loss is for the logs and learning curves."""
        if not self._val:
            return
        logits, labels = (torch.cat(v) for v in zip(*self._val))
        self._val.clear()
        head = self.classifier.head
        self.log("val_loss", head.loss(logits, labels, self._weights(logits)).item(), prog_bar=True)
        self.log(head.task.val_metric, head.task.validation_score(logits.double().numpy(), labels.numpy(),
                                                                  head.params), prog_bar=True)

    def configure_optimizers(self):
        from transformers import get_cosine_schedule_with_warmup

        groups = discriminative_groups(self.classifier, self.lr, self.lr_ratio, self.settings.weight_decay)
        optimizer = torch.optim.AdamW(groups)
        warmup = max(1, int(self.settings.warmup_fraction * self.total_steps))
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ResumeHint(L.Callback):
    """On Ctrl-C, say how to continue; Lightning itself shuts down and exits."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            log.warning("interrupted in epoch %d: the same `fit` command with --resume continues from %s "
                        "(saved at the end of each epoch)", trainer.current_epoch,
                        self.run_dir / "checkpoints" / "last.ckpt")


def end_to_end_loaders(classifier: Classifier, run: TrainingRun, settings: EndToEndSettings) -> tuple[Any, Any]:
    """The training loader (under torchrun, this rank's share of every global batch) and the validation loader."""
    backbone = classifier.backbone
    modality = get_modality(backbone.modality)
    ranks = distributed.world_size()
    task = classifier.head.task
    train_loader = task.training_loader(modality, backbone, run.train.items, run.train.labels,
                                        settings.batch_size * ranks, train=True, seed=run.seed)
    if ranks > 1:
        if len(run.train.items) < ranks:
            raise HeadstartError(f"{len(run.train.items)} training items cannot be shared by {ranks} processes: "
                                 "run fewer processes")
        train_loader = rank_loader(train_loader, settings.batch_size, ranks, distributed.rank())
    # Validation is not sharded: every rank validates on the whole split, so that each item counts exactly once
    # and every rank reaches the same early-stopping and best-checkpoint decisions (at the cost of repeating
    # the validation pass on each rank).
    val_loader = task.training_loader(modality, backbone, run.val.items, run.val.labels, max(64, settings.batch_size),
                                      train=False)
    return train_loader, val_loader


def checkpoint_callbacks(ckpt_dir: Path, monitored: str, resume: bool) -> tuple[Any, Any]:
    """best.ckpt (the best `monitored` score) and last.ckpt (every epoch) in `ckpt_dir`; a run that does not
    resume replaces the checkpoints of an earlier one."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    if not resume and (ckpt_dir / "last.ckpt").is_file() and distributed.is_main():
        log.info("starting afresh: the checkpoints in %s are replaced (use --resume to continue them)", ckpt_dir)
        for name in ("last.ckpt", "best.ckpt"):
            (ckpt_dir / name).unlink(missing_ok=True)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitored, mode="max",
                           save_top_k=1, enable_version_counter=False)
    # A separate callback for last.ckpt: with save_last=True, Lightning 2.6 writes last.ckpt only in epochs that
    # improve the monitored metric, and --resume would then repeat the epochs after the best one.
    latest = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False)
    return best, latest


def check_resumable(last: Path, module: FineTuneModule, train_loader: Any) -> None:
    """Before resuming from `last`: it exists and fits `module`; the loader's sampler is told the epoch it resumes
    (Lightning makes the first resumed epoch's batches before it tells the sampler the epoch)."""
    if not last.is_file():
        raise HeadstartError(f"--resume: no checkpoint at {last}: run without --resume to start afresh")
    getattr(train_loader.sampler, "set_epoch", lambda epoch: None)(check_checkpoint(last, module))


def train_end_to_end(classifier: Classifier, run: TrainingRun, settings: EndToEndSettings, lr: float,
                     lr_ratio: float, class_weight: torch.Tensor | None = None) -> dict[str, Any]:
    """Train `classifier` in place on `run` (the last layer group at `lr`, the first at lr / lr_ratio; the loss
    weighted by `class_weight` per class, None: unweighted); returns a summary (best epoch, validation accuracy,
    checkpoint)."""
    from lightning.pytorch.callbacks import EarlyStopping

    L.seed_everything(run.seed, workers=True, verbose=False)
    run_dir = run.run_dir
    train_loader, val_loader = end_to_end_loaders(classifier, run, settings)
    classifier.train()  # the head stage leaves the backbone in eval mode; Lightning keeps modules' modes as found
    module = FineTuneModule(classifier, lr, lr_ratio, settings, settings.epochs * len(train_loader), run.seed,
                            class_weight)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = run.resume or restarted_with_checkpoint(last)
    monitored = classifier.head.task.val_metric
    checkpoint, latest = checkpoint_callbacks(last.parent, monitored, resume)
    if resume:
        check_resumable(last, module, train_loader)
    progress, show_bar = lightning_progress("fine-tuning") if distributed.is_main() else ([], False)
    with quiet_lightning(), warnings.catch_warnings():
        # Every rank validates on the whole split, so each rank's val_loss and validation score are already the
        # run's: Lightning's advice to sync them across ranks (sync_dist=True) does not apply.
        warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
        trainer = L.Trainer(
            max_epochs=settings.epochs, **device_settings(), precision=lightning_precision(run.precision),
            callbacks=[checkpoint, latest, EarlyStopping(monitored, mode="max", patience=settings.patience),
                       ResumeHint(run_dir), *progress],
            logger=run.metrics_logger() or False, enable_model_summary=False,
            enable_progress_bar=show_bar, default_root_dir=run_dir,
            log_every_n_steps=min(10, len(train_loader)),
            num_sanity_val_steps=0, use_distributed_sampler=False,  # RankShare shards; validation is whole
        )
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume else None, weights_only=True)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    classifier.cpu().eval()
    score = checkpoint.best_model_score
    return {"best_checkpoint": str(best), "val_metric": monitored,
            "best_val_score": float(score) if score is not None else None,
            "epochs_run": int(trainer.current_epoch), "lr": lr, "lr_ratio": lr_ratio,
            "precision": lightning_precision(run.precision), "steps": int(trainer.global_step)}
