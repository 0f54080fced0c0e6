"""Fine-tuning strategies: one module per strategy, each a dataclass of settings registered by name."""

from . import contrastive, finetune, lora, probe  # noqa: F401  (registration)

# isort: split
from . import auto  # noqa: F401  (registration; it names the others)

# isort: split
from .auto import Auto
from .base import STRATEGIES, Strategy, TrainingRun, make_strategy, register_strategy, strategy_class
from .contrastive import Contrastive
from .finetune import FineTune
from .lora import LoRA
from .probe import Probe

__all__ = ["STRATEGIES", "Auto", "Contrastive", "FineTune", "LoRA", "Probe", "Strategy", "TrainingRun",
           "make_strategy", "register_strategy", "strategy_class"]
