"""`finetune`: the head first on a frozen backbone, then everything with discriminative learning rates.

Stage 1 trains the head on cached embeddings (see probe.py): the backbone is frozen, so its forward pass
need not be repeated each epoch. Stage 2 is a Lightning run over the whole network with per-layer-group
learning rates (smaller towards the input), linear warm-up then cosine decay, early stopping on validation
accuracy and the best checkpoint kept. `resume` continues stage 2 from its last checkpoint, optimizer and
schedule included.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from .._util import autocast_dtype, default_device, worker_count
from ..backbones.base import Backbone, ImageBackbone, TextBackbone
from ..data.dataset import Dataset
from ..data.images import ImageTensors
from ..heads import Classifier
from ..progress import progress_enabled

log = logging.getLogger(__name__)


@dataclass
class FineTuning:
    """Stage-2 settings. `lr` is the rate of the last layer group and the head; the first group gets lr/lr_ratio."""

    epochs: int = 6
    lr: float | None = None
    lr_ratio: float | None = None
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 32
    patience: int = 3
    label_smoothing: float = 0.1
    precision: str = "auto"
    seed: int = 0

    def learning_rate(self, backbone: Backbone, pretrained: bool) -> float:
        if self.lr is not None:
            return self.lr
        if not pretrained:
            return 3e-3
        # minilm on SST-2, dev accuracy (benchmarks/RESULTS.md): lr 1e-4 -> 85.2%, 2e-4 -> 86.2% (ratio 10);
        # with ratio 2.5: 2e-4 -> 87.4%, 3e-4 -> 88.1%.
        return 3e-4 if isinstance(backbone, TextBackbone) else 1e-3

    def learning_rate_ratio(self, backbone: Backbone, pretrained: bool) -> float:
        """How much slower the first layer group learns than the last."""
        if not pretrained:
            return 1.0  # random weights: no reason to hold early layers back
        if self.lr_ratio is not None:
            return self.lr_ratio
        # Transformers need their lower layers to move more than CNNs' generic early filters do: minilm on SST-2
        # (dev accuracy) 86.2% with ratio 10, 87.4% with 2.5.
        return 2.5 if isinstance(backbone, TextBackbone) else 10.0


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Multiplier: linear warm-up to 1, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def discriminative_groups(classifier: Classifier, lr: float, lr_ratio: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups: backbone layer groups with geometrically rising rates, then the head."""
    groups = [g for g in classifier.backbone.layer_groups() if g]
    n = len(groups)
    rates = [lr / lr_ratio ** ((n - 1 - k) / max(1, n - 1)) for k in range(n)]
    param_groups = [{"params": g, "lr": r, "weight_decay": weight_decay} for g, r in zip(groups, rates)]
    param_groups.append({"params": list(classifier.head.parameters()), "lr": lr, "weight_decay": weight_decay})
    return param_groups


class FineTuneModule(L.LightningModule):
    """Trains a Classifier end to end; logs `val_loss` and `val_accuracy` each epoch."""

    def __init__(self, classifier: Classifier, config: FineTuning, lr: float, total_steps: int):
        super().__init__()
        self.classifier = classifier
        self.config = config
        self.lr = lr
        self.total_steps = total_steps
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self._val: list[tuple[float, int, int]] = []

    def forward(self, x: Any) -> torch.Tensor:
        return self.classifier(x)

    def training_step(self, batch: Sequence, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        loss = self.loss_fn(self.classifier(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Sequence, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self.classifier(x)
        self._val.append((nn.functional.cross_entropy(logits, y, reduction="sum").item(),
                          int((logits.argmax(1) == y).sum()), len(y)))

    def on_validation_epoch_end(self) -> None:
        loss, correct, n = (sum(v) for v in zip(*self._val)) if self._val else (0.0, 0, 1)
        self._val.clear()
        self.log("val_loss", loss / n, prog_bar=True)
        self.log("val_accuracy", correct / n, prog_bar=True)

    def configure_optimizers(self):
        groups = discriminative_groups(self.classifier, self.lr, self.config.lr_ratio, self.config.weight_decay)
        optimizer = torch.optim.AdamW(groups)
        warmup = max(1, int(self.config.warmup_fraction * self.total_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, self.total_steps))
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


class _Texts(torch.utils.data.Dataset):
    def __init__(self, data: Dataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.data.items[i], int(self.data.labels[i])


def _channels_last_collate(batch):
    x, y, _, _ = torch.utils.data.default_collate(batch)
    return x.contiguous(memory_format=torch.channels_last), y


def make_loader(backbone: Backbone, data: Dataset, batch_size: int, train: bool, seed: int = 0):
    """Batches of (inputs, labels): images decoded and augmented in workers, texts padded per batch."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(backbone, ImageBackbone):
        dataset = ImageTensors(data.items, backbone.transform(train=train), data.labels, backbone.draft_size())
        workers = worker_count()
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=False,
                                           num_workers=workers, persistent_workers=workers > 0,
                                           collate_fn=_channels_last_collate, generator=generator)
    def collate(batch: list[tuple[str, int]]):
        texts, labels = zip(*batch)
        return backbone.collate(texts), torch.tensor(labels)

    # Batches of similar length (shuffled in groups, as Hugging Face's Trainer does with group_by_length), so
    # little compute goes to padding; validation simply runs in length order.
    lengths = backbone.token_lengths(data.items)
    if train:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
    else:
        sampler = sorted(range(len(data)), key=lengths.__getitem__)
    return torch.utils.data.DataLoader(_Texts(data), batch_size=batch_size, sampler=sampler, collate_fn=collate)


def lightning_precision(precision: str) -> str:
    dtype = {"auto": autocast_dtype(default_device()), "fp32": None, "bf16": torch.bfloat16}[precision]
    return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}.get(dtype, "32-true")


def finetune(classifier: Classifier, train: Dataset, val: Dataset, config: FineTuning, run_dir: Path,
             pretrained: bool = True, resume: bool = False) -> dict[str, Any]:
    """Stage 2: train `classifier` in place; returns a summary (best epoch, validation accuracy, checkpoint)."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    L.seed_everything(config.seed, workers=True, verbose=False)
    backbone = classifier.backbone
    train_loader = make_loader(backbone, train, config.batch_size, train=True, seed=config.seed)
    val_loader = make_loader(backbone, val, max(64, config.batch_size), train=False)
    total_steps = config.epochs * len(train_loader)
    lr = config.learning_rate(backbone, pretrained)
    config.lr_ratio = config.learning_rate_ratio(backbone, pretrained)
    classifier.train()  # the head stage leaves the backbone in eval mode; Lightning keeps modules' modes as found
    module = FineTuneModule(classifier, config, lr, total_steps)
    ckpt_dir = run_dir / "checkpoints"
    if not resume and ckpt_dir.is_dir():
        shutil.rmtree(ckpt_dir)  # another run's checkpoints; --resume would have continued from them
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_accuracy", mode="max",
                                 save_top_k=1, save_last=True, enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=config.epochs, accelerator="auto", devices=1, precision=lightning_precision(config.precision),
        callbacks=[checkpoint, EarlyStopping("val_accuracy", mode="max", patience=config.patience),
                   ResumeHint(run_dir)],
        logger=CSVLogger(run_dir, name="logs"), enable_model_summary=False,
        enable_progress_bar=progress_enabled(), default_root_dir=run_dir,
        log_every_n_steps=min(10, len(train_loader)),
        num_sanity_val_steps=0,
    )
    last = ckpt_dir / "last.ckpt"
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume and last.is_file() else None,
                weights_only=True)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    classifier.cpu().eval()
    score = checkpoint.best_model_score
    return {"best_checkpoint": str(best), "best_val_accuracy": float(score) if score is not None else None,
            "epochs_run": int(trainer.current_epoch), "lr": lr, "lr_ratio": config.lr_ratio,
            "precision": lightning_precision(config.precision), "steps": int(trainer.global_step)}
