"""Heads placed on top of a backbone's embeddings, small classes registered by kind (linear, mlp, prototype): their
outputs, loss and scores are the task's."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from .tasks import Task, task_of


class Standardize(nn.Module):
    """Fixed per-feature centring and scaling, fitted once on training embeddings and saved with the head."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit(self, embeddings: torch.Tensor) -> None:
        """Centre and scale; variances are shrunk towards their mean, so that features (nearly) constant in a
        small training set do not blow up on new data."""
        var = embeddings.var(0) if len(embeddings) > 1 else torch.zeros_like(embeddings[0])
        self.mean.copy_(embeddings.mean(0))
        self.scale.copy_((var + 0.1 * var.mean() + 1e-12).rsqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) * self.scale


class ClassificationHead(nn.Module, ABC):
    """The head on a backbone's embeddings, for any task: standardise, then the layers of its kind (a subclass
    registered with `@register_head`; `HEADS` by kind, the name the manifest records and `--head` takes).

    `forward` gives the raw outputs (logits) that training's loss takes; `scores` gives what every path that
    predicts (predict, evaluate, the server, the exported ONNX graph) reports: the task's transform of them with
    the parameters tuned on the validation split (softmax over logits / temperature, sigmoids with per-label
    temperatures, values restored to the targets' units). Those parameters are metadata in the head config (in the
    manifest), not weights, so models saved before they existed load unchanged.
    """

    kind: ClassVar[str]
    probe_lr: ClassVar[float]  # the probe's learning rate for this head unless the user gives one
    trained_by_gradient: ClassVar[bool] = True  # False: set in closed form by its own strategy, not a --head choice

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 1024, dropout: float = 0.1,
                 temperature: float = 1.0, task: str = "classification", task_settings: dict[str, Any] | None = None,
                 task_params: dict[str, Any] | None = None):
        super().__init__()
        self.config = {"kind": self.kind, "in_dim": in_dim, "n_classes": n_classes, "hidden": hidden,
                       "dropout": dropout, "temperature": float(temperature), "task": task,
                       "task_settings": dict(task_settings or {}), "task_params": dict(task_params or {})}
        self.task = task_of(self.config)
        self.standardize = Standardize(in_dim)
        self.layers = self.build_layers(in_dim, n_classes, hidden, dropout)

    @staticmethod
    @abstractmethod
    def build_layers(in_dim: int, n_classes: int, hidden: int, dropout: float) -> nn.Sequential:
        """The layers from standardised embeddings to outputs (their names are the saved weights' names)."""

    @staticmethod
    def for_task(task: Task, in_dim: int, names: list[str], labels: np.ndarray, kind: str = "linear"
                 ) -> ClassificationHead:
        """A new head of `kind` for `task` over `names`, its task parameters initialised from the training `labels`."""
        return head_class(kind)(in_dim, task.outputs(names), task=task.name, task_settings=task.settings(),
                                task_params=task.initial_params(labels, names))

    @staticmethod
    def from_config(config: dict[str, Any]) -> ClassificationHead:
        """The head a manifest's head config describes (its weights load afterwards)."""
        config = dict(config)
        return head_class(config.pop("kind"))(**config)

    @property
    def params(self) -> dict[str, Any]:
        """What the task's transform and decisions use: the tuned parameters and the temperature."""
        return {**self.config["task_params"], "temperature": self.config["temperature"]}

    def set_params(self, params: dict[str, Any]) -> None:
        params = dict(params)
        self.config["temperature"] = float(params.pop("temperature", 1.0))
        self.config["task_params"] = params

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(self.standardize(embeddings))

    def scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.task.scores(self(embeddings), self.params)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
             smoothing: float = 0.0) -> torch.Tensor:
        return self.task.loss(logits, targets, self.params, weight, smoothing)

    @torch.no_grad()
    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        self.eval()
        return self(torch.from_numpy(embeddings)).double().numpy()

    @torch.no_grad()
    def calibrate(self, embeddings: np.ndarray, labels: np.ndarray, seed: int = 0, calibrate: bool = True
                  ) -> dict[str, Any] | None:
        """Tune what the task tunes on held-out embeddings and labels (the validation split): temperature scaling
        for classes, per-label temperatures and thresholds for multi-label, conformal intervals for regression;
        each kept only when it passes the task's acceptance test. Returns the JSON-ready record."""
        params, record = self.task.tune(self.logits(embeddings), np.asarray(labels), self.params, calibrate, seed)
        self.set_params(params)
        return record

    @torch.no_grad()
    def last_layer_inputs(self, embeddings: np.ndarray) -> np.ndarray:
        """What the last (linear) layer reads for each of the float32 embeddings: the features a loss gradient on
        that layer is an outer product with (BADGE's gradient embeddings)."""
        self.eval()
        return self.layers[:-1](self.standardize(torch.from_numpy(embeddings))).float().numpy()

    @torch.no_grad()
    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """The task's scores (items x outputs; class probabilities for classification) of float32 embeddings."""
        self.eval()
        return self.scores(torch.from_numpy(embeddings)).float().numpy()


HEADS: dict[str, type[ClassificationHead]] = {}
H = TypeVar("H", bound=type[ClassificationHead])


def trainable_head_kinds() -> tuple[str, ...]:
    """The kinds `--head` offers to strategies that train a head by gradient (probe, finetune)."""
    return tuple(kind for kind, cls in HEADS.items() if cls.trained_by_gradient)


def register_head(cls: H) -> H:
    """Class decorator: make a head known by its `kind` to `--head` and to loading."""
    HEADS[cls.kind] = cls
    return cls


def head_class(kind: str) -> type[ClassificationHead]:
    """The head class of `kind` (a ValueError naming the kinds for any other: loading reports it as damage)."""
    if kind not in HEADS:
        raise ValueError(f"head must be one of {tuple(HEADS)}, got {kind!r}")
    return HEADS[kind]


@register_head
class LinearHead(ClassificationHead):
    """standardise -> dropout -> linear: the probe's and fine-tuning's default."""

    kind = "linear"
    probe_lr = 1e-3

    @staticmethod
    def build_layers(in_dim: int, n_classes: int, hidden: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_classes))


@register_head
class MLPHead(ClassificationHead):
    """The classic recipe's head: standardise -> Dense(hidden, relu) -> dropout -> Dense(n)."""

    kind = "mlp"
    probe_lr = 3e-4

    @staticmethod
    def build_layers(in_dim: int, n_classes: int, hidden: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                             nn.Linear(hidden, n_classes))


class UnitRows(nn.Module):
    """Each row divided by its Euclidean length: the (centred) embeddings onto the unit sphere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@register_head
class PrototypeHead(ClassificationHead):
    """centre -> unit rows -> cosine to each class's prototype, times a fixed logit scale: nearest class mean on
    centred, L2-normalised embeddings ("CL2N", SimpleShot, Wang et al. 2019). Its weights are set in closed form by
    the `prototypes` strategy (`from_class_means`), not trained; centring uses `standardize` with unit scale."""

    kind = "prototype"
    probe_lr = 1e-3  # unused: nothing trains it by gradient; required of every head kind
    trained_by_gradient = False

    @staticmethod
    def build_layers(in_dim: int, n_classes: int, hidden: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(UnitRows(), nn.Linear(in_dim, n_classes, bias=False))

    @classmethod
    def from_class_means(cls, task: Task, embeddings: np.ndarray, labels: np.ndarray, names: list[str],
                         logit_scale: float) -> PrototypeHead:
        """A head for `task` over the classes `names` whose prototypes are the class means of `embeddings`
        (`labels`: indices into `names`), in eval mode: what the `prototypes` strategy fits."""
        head = ClassificationHead.for_task(task, embeddings.shape[-1], names, labels, cls.kind)
        assert isinstance(head, PrototypeHead)
        head.set_prototypes(embeddings, labels, logit_scale)
        head.eval()
        return head

    @torch.no_grad()
    def set_prototypes(self, embeddings: np.ndarray, labels: np.ndarray, logit_scale: float) -> None:
        """Centre on the mean of `embeddings`, then make each class's weight row its mean unit row (normalised
        again) times `logit_scale`, so that logits are scaled cosines to the class means."""
        x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.standardize.mean.copy_(x.mean(0))
        self.standardize.scale.fill_(1.0)
        rows = self.layers[0](self.standardize(x))
        n_classes = self.layers[-1].out_features
        sums = torch.zeros(n_classes, rows.shape[1]).index_add_(0, y, rows)
        self.layers[-1].weight.copy_(logit_scale * self.layers[0](sums))


class Classifier(nn.Module):
    """Backbone followed by head: inputs -> logits."""

    def __init__(self, backbone: nn.Module, head: ClassificationHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, batch: Any) -> torch.Tensor:
        return self.head(self.head.task.features(self.backbone, batch))

    def scores(self, batch: Any) -> torch.Tensor:
        """What the model reports for a batch (probabilities, or values): see `ClassificationHead.scores`."""
        return self.head.scores(self.head.task.features(self.backbone, batch).float())
