"""The task interface: what one kind of target (one class, a set of labels, numbers) asks of every command.

A task is a dataclass of validated settings, like a strategy. It knows how labels are read from table cells and
encoded as an array, how a split keeps them representative, the head's output and its loss, what is tuned on the
validation split after training (a temperature, per-label thresholds, conformal intervals), the metrics, and what
a prediction is. Data, heads, strategies, evaluation, export and the server ask the task instead of asking
"which task?"; a new task is one new module registered with `@register_task`.

What is tuned after training lives in the head's `task_params` (metadata in the manifest and the ONNX sidecar, not
weights), so that predict, evaluate, the server and an exported graph make the same decisions. Turning one row of
scores into a prediction record is torch-free (`headstart.runtime.records`), so a deployment without torch gives
the same records.
"""

from __future__ import annotations

import dataclasses
import difflib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..errors import SettingsError

Cells = Sequence[Sequence[str]]  # per row, the text of each label column (one column for most tasks)


class Task(ABC):
    """Subclasses are dataclasses whose fields are the task's settings (recorded in the manifest)."""

    name: ClassVar[str]
    noun: ClassVar[str]  # what a name in `classes` is, for messages: "class", "label", "target"
    headline: ClassVar[tuple[str, ...]]  # the metrics shown first, in this order
    val_metric: ClassVar[str]  # the validation score training monitors (higher is better)
    # Whether each item has exactly one class: what class folders, shards' class labels, per-class sampling,
    # pseudo-labels and class explanations assume.
    one_class_per_item: ClassVar[bool] = False
    # Whether labels belong to the words of an item (token tagging) rather than to the item: then there is no one
    # embedding per item (no head stage before fine-tuning, no embedding cache), and the task reads, batches and
    # scores its items itself through `features`, `training_loader`, `frozen_features` and `score_items` below.
    per_token: ClassVar[bool] = False
    default_strategy: ClassVar[str] = "probe"  # what `fit` trains with when no strategy is named

    # -- reading labels ---------------------------------------------------------------------------------------------
    def label_columns(self) -> list[str] | None:
        """The table columns that hold the labels when the task names them (regression's targets); None: one
        label column, given with --label-column or found by name."""
        return None

    @abstractmethod
    def encode(self, cells: Cells, where: Any, columns: Sequence[str], names: Sequence[str] | None
               ) -> tuple[np.ndarray, list[str]]:
        """(labels array with one row per item, names) from the rows' label cells; with `names` (a trained model's
        classes), labels must be among them."""

    @abstractmethod
    def as_labels(self, labels: Any, n_names: int | None = None) -> np.ndarray:
        """`labels` as this task's array type and shape (checked): int64 class ids, or float32 items x names."""

    def stratify(self, labels: np.ndarray) -> np.ndarray | None:
        """One group id per item that a split keeps in proportion (None: a plain random split)."""
        return None

    def counts(self, labels: np.ndarray, names: Sequence[str]) -> dict[str, int] | None:
        """Items per name (classes, labels), or None where that means nothing (regression)."""
        return None

    def check_trainable(self, labels: np.ndarray, names: Sequence[str], where: str) -> None:
        """Raise a DataError when the training labels cannot train a model (a class without items)."""
        return None

    # -- the head ----------------------------------------------------------------------------------------------------
    def outputs(self, names: Sequence[str]) -> int:
        return len(names)

    def initial_params(self, labels: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
        """The head's task parameters before training (e.g. the targets' mean and scale)."""
        return {}

    @abstractmethod
    def scores(self, logits: Any, params: dict[str, Any]) -> Any:
        """What the head outputs (torch tensors): probabilities, or values in the targets' units."""

    @abstractmethod
    def loss(self, logits: Any, targets: Any, params: dict[str, Any], weight: Any = None, smoothing: float = 0.0
             ) -> Any:
        """The training loss (a torch scalar) of the head's `logits` for `targets` (a batch of labels)."""

    @abstractmethod
    def validation_score(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any]) -> float:
        """`val_metric` of validation logits (higher is better): what early stopping and checkpoints watch."""

    def training_weights(self, labels: np.ndarray, names: Sequence[str], choice: str) -> tuple[Any, dict[str, Any]]:
        """Per-output loss weights for the strategy's `class_weight` setting and the record of the choice."""
        if choice == "balanced":
            raise SettingsError(f"class_weight (--class-weight) balanced applies to classification, not to {self.name}")
        return None, {"setting": choice, "resolved": "none", "reason": f"class weights do not apply to {self.name}"}

    # The interface grew here for token tagging (`tokens`): what the head is put on, how training batches are made
    # and how items are scored are the task's where a prediction is not one row per item. The defaults are what
    # every item-level task does.
    def features(self, backbone: Any, batch: Any) -> Any:
        """What the head takes from the backbone for a batch: one embedding per item by default."""
        return backbone(batch)

    def training_loader(self, modality: Any, backbone: Any, items: Any, labels: np.ndarray, batch_size: int,
                        train: bool, seed: int = 0) -> Any:
        """A DataLoader of (inputs, labels) for end-to-end training (the modality's, by default)."""
        return modality.training_loader(backbone, items, labels, batch_size, train, seed=seed)

    def score_items(self, classifier: Any, items: Any, precision: str, model: Any, batch_size: int | None,
                    words_given: bool) -> tuple[list[Any], list[tuple[int, str]]] | None:
        """The task's own scores per item and the (index, reason) failures, or None: the head's scores of one
        embedding per item (the default). `words_given`: the items are labeled data whose words are known."""
        return None

    def frozen_features(self, backbone: Any, items: Any, labels: np.ndarray, precision: str) -> np.ndarray | None:
        """What a head on the frozen `backbone` (the probe) trains on when the task makes it itself: an array
        whose leading axes match `labels`, so that `loss` and `validation_score` take the head's outputs on it as
        they take the end-to-end model's. None: one embedding per item, computed (and cached) by the embeddings
        module (the default). `precision`: the fit's choice (auto, fp32, bf16)."""
        return None

    def labeled_rows(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The rows (vectors) of `features` that carry a label: what the head's standardisation is fitted on.
        Every item's embedding by default."""
        return features

    # -- after training ------------------------------------------------------------------------------------------
    @abstractmethod
    def tune(self, logits: np.ndarray, labels: np.ndarray, params: dict[str, Any], calibrate: bool, seed: int
             ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Fit what is tuned on the validation split (`logits`: the head's raw outputs with the current params);
        returns the new params and a JSON-ready record (the manifest's `calibration`; None: nothing was tuned)."""

    def describe_tuning(self, record: dict[str, Any]) -> str:
        """One log line on what `tune` did (its record)."""
        return f"not calibrated: {record.get('reason')} (temperature left at 1)"

    # -- results -----------------------------------------------------------------------------------------------------
    @abstractmethod
    def metrics(self, labels: np.ndarray, scores: np.ndarray, names: Sequence[str], params: dict[str, Any]
                ) -> dict[str, Any]:
        """Held-out metrics (plain JSON types) of `scores` (the head's outputs) against `labels`; includes `n`."""

    @abstractmethod
    def decide(self, scores: np.ndarray, names: Sequence[str], params: dict[str, Any]) -> list[Any]:
        """The prediction per item: a class name, a list of labels, or {target: value}."""

    def agreement(self, reference: np.ndarray, got: np.ndarray, names: Sequence[str], params: dict[str, Any]
                  ) -> float:
        """How often two score arrays of the same items (PyTorch's and an exported graph's) lead to the same
        prediction."""
        return float(np.mean([a == b for a, b in zip(self.decide(reference, names, params),
                                                      self.decide(got, names, params))]))

    def score_scale(self, params: dict[str, Any]) -> float:
        """The scale of the scores (1 for probabilities): what an exported graph's tolerance is multiplied by."""
        return 1.0

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def describe(self, names: Sequence[str]) -> str:
        return f"{len(names)} {self.noun}{'es' if self.noun == 'class' else 's'}" if len(names) != 1 else \
            f"1 {self.noun}"


TASKS: dict[str, type[Task]] = {}
T = TypeVar("T", bound=type[Task])


def register_task(cls: T) -> T:
    """Class decorator: make a task known to `fit` and `--task` by its `name`."""
    TASKS[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SettingsError(f"unknown task '{name}'{hint}: use one of {', '.join(TASKS)}")
    return TASKS[name]


def make_task(task: str | Task | None = None, **settings: Any) -> Task:
    """A task object from a name and its settings (None values left at the defaults), or the object itself."""
    if isinstance(task, Task):
        return task
    cls = task_class(task or "classification")
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(given) - fields)
    if unknown:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in unknown)
        raise SettingsError(f"{flags} do{'es' * (len(unknown) == 1)} not apply to --task {cls.name}")
    return cls(**given)


def task_of(record: dict[str, Any] | None) -> Task:
    """The task a head config records (`task` name and `task_settings`); classification for older models."""
    record = record or {}
    return make_task(record.get("task") or "classification", **(record.get("task_settings") or {}))
