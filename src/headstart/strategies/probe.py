"""`probe`: frozen backbone, embeddings computed once (and cached), a head trained on them."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..heads import ClassificationHead


@dataclass
class HeadTraining:
    """How the head is trained on fixed embeddings (Adam, early stopping on validation loss)."""

    kind: str = "linear"
    epochs: int = 60
    lr: float | None = None  # None: 1e-3 for a linear head, 3e-4 for the MLP (which overfits within an epoch at 1e-3)
    batch_size: int = 64
    weight_decay: float = 1e-4
    patience: int = 8
    min_steps: int = 600  # small data sets get more epochs, so the head sees enough updates
    seed: int = 0


def train_head(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, n_classes: int,
               config: HeadTraining) -> tuple[ClassificationHead, dict]:
    """Fit a head on embeddings; returns the head at its best validation loss and the training history.

    A plain loop rather than Lightning: on cached embeddings an epoch takes milliseconds, and a trainer's
    per-step overhead would dominate.
    """
    torch.manual_seed(config.seed)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y)
    head = ClassificationHead(x.shape[1], n_classes, config.kind)
    head.standardize.fit(x)
    lr = config.lr if config.lr is not None else (3e-4 if config.kind == "mlp" else 1e-3)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    best_loss, best_state, best_epoch, history = float("inf"), None, 0, []
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    patience = max(config.patience, math.ceil(config.min_steps / 6 / steps_per_epoch))
    for epoch in range(epochs):
        head.train()
        for idx in torch.randperm(len(x), generator=generator).split(config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(head(x[idx]), y[idx]).backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            logits = head(vx)
            val_loss = loss_fn(logits, vy).item()
            val_acc = (logits.argmax(1) == vy).float().mean().item()
        history.append({"epoch": epoch, "val_loss": val_loss, "val_accuracy": val_acc})
        if val_loss < best_loss - 1e-4:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(head.state_dict()), epoch
        elif epoch - best_epoch >= patience:
            break
    head.load_state_dict(best_state)
    head.eval()
    return head, {"lr": lr, "best_epoch": best_epoch, "epochs_run": len(history), "history": history}


@torch.no_grad()
def head_probabilities(head: ClassificationHead, embeddings: np.ndarray) -> np.ndarray:
    head.eval()
    return torch.softmax(head(torch.from_numpy(embeddings)), dim=1).numpy()
