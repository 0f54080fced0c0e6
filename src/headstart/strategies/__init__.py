"""Fine-tuning strategies: one module per strategy, each a dataclass of settings registered by name."""

from . import contrastive, finetune, probe  # noqa: F401  (registration)
from .base import STRATEGIES, Strategy, TrainingRun, make_strategy, register_strategy, strategy_class
from .contrastive import Contrastive
from .finetune import FineTune
from .probe import Probe

__all__ = ["STRATEGIES", "Contrastive", "FineTune", "Probe", "Strategy", "TrainingRun", "make_strategy",
           "register_strategy", "strategy_class"]
