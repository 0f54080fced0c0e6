"""The strategy interface: a strategy is a dataclass of validated settings that trains a Classifier.

A strategy owns its settings (fields with ranges checked on creation), its stages (`train`), and what a saved
model must record to be rebuilt (`settings`). Loading imports no strategy: a strategy that changes the network's
structure, such as LoRA, says how loading rebuilds it in `headstart.structures`. New strategies register with
`@register_strategy`; `fit` and the CLI find them by name, so a new strategy is one new module.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..data.unreadable import without_unreadable
from ..embedding_cache import EmbeddingCache
from ..embeddings import embed_dataset
from ..errors import DataError, SettingsError
from ..heads import Classifier
from ..settings import option
from ..structures import STRUCTURES, unchanged
from ..tasks import Task
from ..training import make_logger


@dataclass
class TrainingRun:
    """What a strategy trains on and with: the backbone, the train/val splits, and where to write (the run folder,
    and `logger`: what its training curves are written as, one of training.LOGGERS)."""

    backbone: Backbone
    train: Dataset
    val: Dataset
    classes: list[str]
    run_dir: Path | None
    precision: str
    seed: int
    strict: bool = False
    resume: bool = False
    cache: EmbeddingCache | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    val_embeddings: np.ndarray | None = None  # the frozen backbone's, kept by embed_splits for calibration
    logger: str = "csv"
    _metrics_logger: Any = dataclasses.field(default=None, init=False, repr=False)
    # The frozen backbone's train and val embeddings once made: `auto` fits two strategies on them, and the second
    # must not pay the embedding pass again (nor read the disk cache, nor embed again where caching is off).
    _frozen_splits: tuple[np.ndarray, np.ndarray] | None = dataclasses.field(default=None, init=False, repr=False)

    def metrics_logger(self) -> Any:
        """The Lightning logger that every stage of this run writes its curves to (one per run, made on first use,
        so that a strategy that logs nothing leaves no trace); None without a run folder, and on the ranks that do
        not log where the logger must not be made there (training.make_logger)."""
        if self.run_dir is None:
            return None
        if self._metrics_logger is None:
            self._metrics_logger = make_logger(self.logger, self.run_dir)
        return self._metrics_logger

    @contextmanager
    def closing_logger(self) -> Iterator[None]:
        """Around training: the logger, if one was made, is finalized with the outcome (MLflow marks the run
        finished or failed; CSV and TensorBoard flush their files). A Lightning Trainer has finalized it already
        when it was its logger; finalizing again only repeats that."""
        status = "failed"
        try:
            yield
            status = "success"
        finally:
            if self._metrics_logger is not None:
                self._metrics_logger.finalize(status)

    def embed_splits(self, cached: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of train and val (or the task's own frozen features: a vector per word for token tagging),
        unreadable items dropped from both splits. `cached`: look embeddings up in (and add them to) the run's
        cache, which is keyed by the backbone as loaded: a strategy that has already changed the backbone's weights
        passes False. The unchanged backbone's embeddings are made once per run and then reused."""
        if cached and self._frozen_splits is not None:
            return self._frozen_splits
        started = time.perf_counter()
        cache = self.cache if cached else None
        self.train, train_x = self._frozen_features(self.train, cache)
        self.val, val_x = self._frozen_features(self.val, cache)
        self.check_classes_usable()
        self.timings["embed"] = time.perf_counter() - started
        self.val_embeddings = val_x
        if cached:
            self._frozen_splits = train_x, val_x
        return train_x, val_x

    def _frozen_features(self, data: Dataset, cache: EmbeddingCache | None) -> tuple[Dataset, np.ndarray]:
        """The readable part of `data` and what a head on the frozen backbone trains on for it: the task's own
        features where it makes them (token tagging: a vector per word), else one embedding per item."""
        features = self.task.frozen_features(self.backbone, data.items, data.labels, self.precision)
        if features is None:
            return embed_dataset(self.backbone, data, cache, self.precision, self.strict)
        return data, features  # a task with features of its own reads texts, which are always readable

    def drop_unreadable(self) -> None:
        """Leave out train/val items that cannot be decoded (for strategies that never embed them first)."""
        self.train = without_unreadable(self.train, self.strict)
        self.val = without_unreadable(self.val, self.strict)
        self.check_classes_usable()

    @property
    def task(self) -> Task:
        return self.train.task

    def check_classes_usable(self) -> None:
        self.task.check_trainable(self.train.labels, self.classes, self.train.name)
        if len(self.val) == 0:
            raise DataError(f"the validation split ({self.val.name}) has no readable items: add readable files or "
                            "give a larger --val-size")


class Strategy(ABC):
    """Subclasses are dataclasses: their fields are the settings, validated in `__post_init__`."""

    name: ClassVar[str]
    needs_run_dir: ClassVar[bool] = False  # writes checkpoints, so `fit` needs `out`
    freezes_backbone: ClassVar[bool] = True  # test embeddings of an unchanged backbone may come from the cache
    tasks: ClassVar[tuple[str, ...] | None] = None  # the tasks it trains (None: every task)
    runs_distributed: ClassVar[bool] = False  # trains under torchrun (sharded extraction, or Lightning DDP)

    @abstractmethod
    def train(self, run: TrainingRun) -> tuple[Classifier, dict[str, Any]]:
        """Train a classifier on `run`; returns it and a JSON-ready record of the training (history, rates)."""

    def settings(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, recorded in the manifest so that loading can rebuild the model
        (`headstart.structures`)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


STRATEGIES: dict[str, type[Strategy]] = {}
S = TypeVar("S", bound=type[Strategy])


def register_strategy(cls: S) -> S:
    """Class decorator: make a strategy known to `fit` and `--strategy` by its `name`, and to loading (a network
    of backbone and head, unless the strategy registered another structure with `register_structure`)."""
    STRATEGIES[cls.name] = cls
    STRUCTURES.setdefault(cls.name, unchanged)
    return cls


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        close = difflib.get_close_matches(name, list(STRATEGIES), n=1, cutoff=0.75)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SettingsError(f"unknown strategy '{name}'{hint}: use one of {', '.join(STRATEGIES)} (a plug-in strategy is "
                            "known once the module that registers it is imported)")
    return STRATEGIES[name]


def check_task(plan: Strategy, task: Task) -> None:
    """A strategy that trains only some tasks refuses the others with the ones it trains and what to use."""
    if plan.tasks is not None and task.name not in plan.tasks:
        others = [n for n, c in STRATEGIES.items() if c.tasks is None]
        raise SettingsError(f"--strategy {plan.name} trains {' and '.join(plan.tasks)} only, not --task {task.name} "
                            f"(not supported yet): use --strategy {' or '.join(others[:3])}")


def make_strategy(strategy: str | Strategy, settings: dict[str, Any]) -> Strategy:
    """A strategy object from a name and settings, or the object itself (settings then must be empty)."""
    if isinstance(strategy, Strategy):
        if settings:
            raise SettingsError(f"pass settings ({', '.join(settings)}) inside the strategy object, not beside it")
        return strategy
    cls = strategy_class(strategy)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(settings) - fields)
    if unknown:
        others = [n for n, c in STRATEGIES.items() if set(unknown) <= {f.name for f in dataclasses.fields(c)}]
        hint = f"; it is a setting of {', '.join(others)}" if others else ""
        raise SettingsError(f"strategy '{strategy}' has no setting {', '.join(map(option, unknown))}{hint} "
                            f"(its settings: {', '.join(sorted(fields))})")
    return cls(**settings)

