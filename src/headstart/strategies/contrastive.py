"""`contrastive`: SetFit-style few-shot text classification (Tunstall et al. 2022, "Efficient Few-Shot Learning
Without Prompts", arXiv:2209.11055).

Stage 1 fine-tunes the sentence encoder on pairs drawn from the few labeled examples: for each of R iterations,
every example is paired once with an example of its own class (target cosine similarity 1) and once with an
example of another class (target 0), and the encoder learns with the cosine-similarity loss (the mean squared
error between the pair's cosine similarity and its target). R pairs per example turn 16 labels into 640 training
pairs, which is why the method works with so few labels. Stage 2 fits the paper's head, an L2-regularised
logistic regression (scikit-learn's, C = 1, to convergence, on the training examples only), on the tuned
encoder's embeddings, and copies it into the project's linear head, so saving, `predict`, `serve` and ONNX export
treat the result like any other model; the tuned encoder is saved in the artifact with the head. With
imbalanced classes the logistic regression weights them (`class_weight`, class_weights.py; scikit-learn's
`class_weight`); the pairs are drawn as the paper draws them.

The paper's settings are the defaults: R = 20, one epoch, learning rate 2e-5, batch 16 pairs. Departures from it:
- the logistic regression sees the embeddings divided by their mean length over the training examples rather
  than each divided by its own length (sentence-transformers' Normalize): one scale for all is what the linear
  head's Standardize layer can hold, and on SST-2 with 8 labels per class the two are within a point. The
  project's usual head (early stopping on validation loss) is not used: with 8 validation examples per class
  it stopped at the first epochs and lost 6 points on average against the logistic regression (55% against
  61.2% over 5 draws, untuned minilm);
- a positive pair never joins an example with itself (the paper's sampler allows it; such a pair has cosine
  similarity 1 whatever the encoder, so it teaches nothing), unless the example is alone in its class;
- linear warm-up over the first 10% of steps, then linear decay, as the sentence-transformers `fit` the paper
  used does; bfloat16 autocast where the device is fast at it.

Under torchrun the pair stage is data-parallel (torch's DistributedDataParallel, gradients averaged over the
ranks): `batch_size` pairs per process, each rank its contiguous part of every global batch of the epoch's seeded
order, so that two processes with batch B take the steps of one with batch 2B (the weights match exactly without
dropout, whose draws differ). The head's embeddings are extracted sharded, every rank fits the head on them and
rank 0's is kept; rank 0 alone writes the run (api.py).

Hand-written on a plain PyTorch loop rather than with `setfit`/`sentence-transformers`: those train their own
model objects (a SentenceTransformer, a scikit-learn head) that the artifact could not store without pickle, and
one epoch over a few hundred pairs needs none of a trainer's checkpoints or early stopping.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed
from .._util import default_device, precision_dtype
from ..backbones.base import TextBackbone
from ..errors import SettingsError
from ..heads import ClassificationHead, Classifier, LinearHead
from ..progress import progress_bar
from ..settings import check_choice, check_range, setting
from ..tasks.class_weights import CLASS_WEIGHT_CHOICES, class_weights
from ..training import CurveLog
from .base import Strategy, TrainingRun, register_strategy
from .finetune import same_head_on_every_rank


@register_strategy
@dataclass
class Contrastive(Strategy):
    """Settings of the pair stage (SetFit's defaults) and the head trained after it."""

    name = "contrastive"
    tasks = ("classification",)  # pairs are "same class" or "another class": one class per item
    freezes_backbone = False  # the encoder is tuned: test embeddings must be computed afresh
    runs_distributed = True  # the pair stage all-reduces its gradients; the head is rank 0's

    iterations: int = setting(20, "contrastive: pairs drawn per labeled example (SetFit's R, default 20).")
    epochs: int = 1
    lr: float = 2e-5
    batch_size: int = 16  # pairs per step
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    head_c: float = setting(1.0, "contrastive: inverse L2 strength of the logistic-regression head "
                                 "(scikit-learn's C; its default 1).")
    class_weight: str = "auto"  # of the head's loss; auto: balanced when the largest class is more than 5x the smallest

    def __post_init__(self) -> None:
        check_range("iterations", self.iterations, low=1, integer=True)
        check_range("epochs", self.epochs, low=1, integer=True)
        check_range("lr", self.lr, low=0, low_open=True, high=10)
        check_range("batch_size", self.batch_size, low=1, integer=True)
        check_range("warmup_fraction", self.warmup_fraction, low=0, high=1, high_open=True)
        check_range("weight_decay", self.weight_decay, low=0, high=10)
        check_range("head_c", self.head_c, low=0, low_open=True)
        check_choice("class_weight", self.class_weight, CLASS_WEIGHT_CHOICES)

    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        if not isinstance(run.backbone, TextBackbone):
            raise SettingsError(f"the contrastive strategy tunes a sentence encoder on pairs of texts, but this "
                                f"backbone takes {run.backbone.modality}: use probe or finetune, or a text backbone "
                                "(e.g. --backbone minilm)")
        started = time.perf_counter()
        pairs = sentence_pairs(run.train.labels, self.iterations, np.random.default_rng(run.seed))
        record: dict[str, Any] = {"pair_stage": tune_on_pairs(run.backbone, list(run.train.items), pairs, self,
                                                              run.precision, run.seed, run.metrics_logger())}
        run.timings["pair_stage"] = time.perf_counter() - started
        train_x, val_x = run.embed_splits(cached=False)  # the cache holds the untuned encoder's embeddings
        weights, record["class_weight"] = class_weights(run.train.labels, len(run.classes), self.class_weight)
        head = logistic_regression_head(train_x, run.train.labels, len(run.classes), self.head_c, weights)
        same_head_on_every_rank(head, {})  # every rank fits it on the same embeddings; rank 0's is kept
        val_accuracy = float((head.probabilities(val_x).argmax(1) == run.val.labels).mean())
        record["head_stage"] = {"kind": "logistic regression", "C": self.head_c, "val_accuracy": val_accuracy}
        return Classifier(run.backbone, head), record


def logistic_regression_head(x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 1.0,
                             class_weight: torch.Tensor | None = None) -> ClassificationHead:
    """SetFit's head: scikit-learn's L2-regularised logistic regression, fitted to convergence on embeddings
    scaled to unit mean length, held as the project's linear head (Standardize: no centring, that one scale).
    `class_weight`: per-class weights of the items in its loss (None: unweighted).

    Hand-written glue rather than keeping scikit-learn's estimator: the artifact stores tensors, never pickles.
    """
    from sklearn.linear_model import LogisticRegression

    scale = 1.0 / max(float(np.linalg.norm(x, axis=1).mean()), 1e-12)
    weights = None if class_weight is None else {i: float(w) for i, w in enumerate(class_weight)}
    model = LogisticRegression(C=c, max_iter=2000, class_weight=weights).fit(x * scale, y)
    weight = torch.as_tensor(model.coef_, dtype=torch.float32)
    bias = torch.as_tensor(model.intercept_, dtype=torch.float32)
    if n_classes == 2:  # one logit z for class 1: softmax([-z/2, z/2]) is sigmoid(z)
        weight, bias = torch.cat([-weight, weight]) / 2, torch.cat([-bias, bias]) / 2
    head = LinearHead(x.shape[1], n_classes, dropout=0.0)
    with torch.no_grad():
        head.standardize.mean.zero_()
        head.standardize.scale.fill_(scale)
        linear = head.layers[-1]
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return head.eval()


def sentence_pairs(labels: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """SetFit's iterated pair sampling: rows (first index, second index, target similarity), shuffled.

    Each iteration pairs every example with one random example of its class (target 1) and one of another
    class (target 0): 2 * iterations * len(labels) pairs.
    """
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    rows = []
    for _ in range(iterations):
        for i, label in enumerate(labels):
            same = index[(labels == label) & (index != i)]
            rows.append((i, rng.choice(same) if len(same) else i, 1.0))
            rows.append((i, rng.choice(index[labels != label]), 0.0))
    pairs = np.array(rows, dtype=np.float64)
    return pairs[rng.permutation(len(pairs))]


def cosine_similarity_loss(first: torch.Tensor, second: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' CosineSimilarityLoss: MSE between cos(u, v) and the pair's target similarity."""
    return nn.functional.mse_loss(nn.functional.cosine_similarity(first.float(), second.float()), target)


def _pair_step(model: nn.Module, backbone: TextBackbone, texts: list[str], batch: np.ndarray, in_global_batch: int,
               optimizer: torch.optim.Optimizer, scheduler: Any, autocast: Any, device: torch.device) -> float:
    """One optimiser step on this rank's `batch` of (first, second, target) pairs, part of a global batch of
    `in_global_batch` pairs (the whole batch with one process); returns the global batch's loss. `model` is the
    backbone, or under torchrun its DDP wrapper, which averages the gradients over the ranks."""
    first, second = batch[:, 0].astype(int), batch[:, 1].astype(int)
    # Both sides in one forward pass: one padded batch of 2B texts is cheaper than two of B.
    tokens = backbone.collate([texts[i] for i in first] + [texts[i] for i in second])
    with autocast:
        embeddings = model({k: v.to(device) for k, v in tokens.items()})
    loss = cosine_similarity_loss(embeddings[:len(batch)], embeddings[len(batch):],
                                  torch.as_tensor(batch[:, 2], dtype=torch.float32, device=device))
    # DDP averages the ranks' gradients; weighted by its share of the global batch, each rank's mean loss makes
    # that average the gradient of the global batch's mean, as one process would compute it (the factor is 1 then).
    ranks = distributed.world_size()
    optimizer.zero_grad(set_to_none=True)
    (loss * (len(batch) * ranks / in_global_batch)).backward()
    optimizer.step()
    scheduler.step()
    if ranks == 1:
        return round(loss.item(), 5)
    return round(distributed.sum_over_ranks([loss.item() * len(batch)])[0] / in_global_batch, 5)


def tune_on_pairs(backbone: TextBackbone, texts: list[str], pairs: np.ndarray, settings: Contrastive,
                  precision: str, seed: int, logger: Any = None) -> dict[str, Any]:
    """Fine-tune the whole encoder in place on sentence pairs; returns the loss per step (for the manifest), which
    goes to `logger` too (a Lightning logger, rank 0's: pair_stage/loss at each step).

    Under torchrun `settings.batch_size` is per process: each epoch's order is cut into global batches of
    batch_size x processes pairs, each rank takes its contiguous part of every one (`distributed.global_batches`,
    `shard`: no pair twice, no padding) and the gradients are averaged over the ranks, so that the steps are
    those of one process with the global batch (a last global batch with fewer pairs than processes is left out)."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    device = default_device()
    backbone.to(device).train()  # dropout on, as in the paper's sentence-transformers fit
    model = distributed.all_reducing(backbone)
    optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    global_batches = distributed.global_batches(len(pairs), settings.batch_size)
    total = len(global_batches) * settings.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_fraction * total), total)
    dtype = precision_dtype(precision, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    losses = []
    # One bar over the whole job, on rank 0.
    bar = progress_bar("tuning on pairs", len(pairs) * settings.epochs, unit="pairs") if distributed.is_main() \
        else nullcontext(lambda n: None)
    with bar as advance, CurveLog(logger) as curves:
        for epoch in range(settings.epochs):
            order = np.random.default_rng(seed + epoch).permutation(len(pairs)) if epoch else np.arange(len(pairs))
            for start, stop in global_batches:
                batch = pairs[distributed.shard(order[start:stop])]
                losses.append(_pair_step(model, backbone, texts, batch, stop - start, optimizer, scheduler, autocast,
                                         device))
                curves.add({"epoch": epoch, "pair_stage/loss": losses[-1]}, step=len(losses) - 1)
                advance(stop - start)
    del model  # the DDP wrapper (its gradient hooks) is not needed past training
    backbone.cpu().eval()
    return {"pairs": len(pairs), "steps": len(losses), "lr": settings.lr, "first_loss": losses[0],
            "final_loss": float(np.mean(losses[-max(1, len(losses) // 10):])), "losses": losses}
