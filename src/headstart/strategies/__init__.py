"""Fine-tuning strategies: one module per strategy, each a dataclass of settings registered by name."""

from . import contrastive, finetune, lora, probe  # noqa: F401  (registration)
from .base import STRATEGIES, Strategy, TrainingRun, make_strategy, register_strategy, strategy_class
from .contrastive import Contrastive
from .finetune import FineTune
from .lora import LoRA
from .probe import Probe

__all__ = ["STRATEGIES", "Contrastive", "FineTune", "LoRA", "Probe", "Strategy", "TrainingRun", "make_strategy",
           "register_strategy", "strategy_class"]
