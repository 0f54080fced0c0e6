"""headstart: transfer learning with pre-trained models, from Python or the command line.

Attributes are imported on first use (PEP 562), so `import headstart` and `headstart --help` start in a
fraction of a second; PyTorch, Lightning and Transformers load when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "api", "load": "model", "evaluate": "api", "select": "selection", "distill": "distillation",
    "audit": "auditing", "suggest": "auditing",
    "pretrain": "pretraining", "Pretrained": "pretraining", "PretrainOptions": "pretraining",
    "BackboneOptions": "options", "DataOptions": "options", "RunOptions": "options", "TaskOptions": "options",
    "TrainedModel": "model",
    "Dataset": "data", "Splits": "data", "load_data": "data", "make_splits": "data",
    "list_backbones": "backbones", "resolve_backbone": "backbones",
    "register_backbone": "backbones", "register_family": "backbones",
    "Strategy": "strategies", "Probe": "strategies", "FineTune": "strategies", "register_strategy": "strategies",
    "LoRA": "strategies", "Contrastive": "strategies", "Auto": "strategies",
    "HeadstartError": "errors",
}
__all__ = [
    "Auto", "BackboneOptions", "Contrastive", "DataOptions", "Dataset", "FineTune", "HeadstartError", "LoRA",
    "PretrainOptions", "Pretrained", "Probe", "RunOptions", "Splits", "Strategy", "TaskOptions", "TrainedModel",
    "__version__", "audit", "distill", "evaluate", "fit", "list_backbones", "load", "load_data", "make_splits", "pretrain",
    "register_backbone", "register_family", "register_strategy", "resolve_backbone", "select", "suggest",
]

if TYPE_CHECKING:
    from .api import evaluate, fit
    from .auditing import audit, suggest
    from .backbones import list_backbones, register_backbone, register_family, resolve_backbone
    from .data import Dataset, Splits, load_data, make_splits
    from .distillation import distill
    from .errors import HeadstartError
    from .model import TrainedModel, load
    from .options import BackboneOptions, DataOptions, RunOptions, TaskOptions
    from .pretraining import Pretrained, PretrainOptions, pretrain
    from .selection import select
    from .strategies import Auto, Contrastive, FineTune, LoRA, Probe, Strategy, register_strategy


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'headstart' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
