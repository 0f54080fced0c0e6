"""headstart: transfer learning with pre-trained models, from Python or the command line."""

from .api import evaluate, fit, load
from .backbones import list_backbones, resolve_backbone
from .data import Dataset, Splits, load_data, make_splits
from .errors import HeadstartError
from .model import TrainedModel
from .pretrain import pretrain

__version__ = "0.1.0"
__all__ = [
           "Dataset",
           "HeadstartError",
           "Splits",
           "TrainedModel",
           "__version__",
           "evaluate",
           "fit",
           "list_backbones",
           "load",
           "load_data",
           "make_splits",
           "pretrain",
           "resolve_backbone",
]
