"""Fine-tuning strategies: one module per strategy, each a dataclass of settings registered by name."""

# Registration, in the order `headstart fit --help` and "unknown strategy" list them: simplest first.
from . import probe  # noqa: F401  # isort: skip
from . import prototypes  # noqa: F401  # isort: skip
from . import finetune  # noqa: F401  # isort: skip
from . import lora  # noqa: F401  # isort: skip
from . import contrastive  # noqa: F401  # isort: skip
from . import auto  # noqa: F401  # isort: skip  (it names the others)

# isort: split
from .auto import Auto
from .base import STRATEGIES, Strategy, TrainingRun, make_strategy, register_strategy, strategy_class
from .contrastive import Contrastive
from .finetune import FineTune
from .lora import LoRA
from .probe import Probe
from .prototypes import Prototypes

__all__ = ["STRATEGIES", "Auto", "Contrastive", "FineTune", "LoRA", "Probe", "Prototypes", "Strategy", "TrainingRun",
           "make_strategy", "register_strategy", "strategy_class"]
