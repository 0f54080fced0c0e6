"""The explainer interface and its registry (by modality name)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .._util import check_writable
from ..errors import HeadstartError
from ..model import TrainedModel


@dataclass
class Explanation:
    """One item's prediction and the attribution of each of its units (pixels, tokens) to the predicted class.

    `inputs` is the model input the units index into (kept so that units can be deleted for the faithfulness
    check); `units` names the units for display (tokens) where they have names.
    """

    item: Any
    label: str
    label_index: int
    score: float
    attributions: np.ndarray
    inputs: Any = None
    units: list[str] = field(default_factory=list)
    file: Path | None = None


class Explainer(ABC):
    """Attributions for one modality. Works on the fp32 training-form network (not the folded inference copy), in
    eval mode, so that gradients reach the backbone's chosen layer."""

    modality: ClassVar[str]
    name: ClassVar[str]  # what --method calls it
    method: ClassVar[str]  # the method and its paper, for reports and the CLI
    file_suffix: ClassVar[str]
    default: ClassVar[bool] = False  # the modality's explainer when none is asked for

    def __init__(self, model: TrainedModel):
        self.model = model
        self.net = model.classifier.eval().float()

    @cached_property
    def layer(self) -> torch.nn.Module:
        """The layer the backbone family names for gradient methods (occlusion needs none)."""
        return self.model.backbone.explain_layer()

    def probabilities(self, inputs: Any) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(self.net(inputs).double(), dim=1)  # float64: no ties at 1.0 in the deletion test

    @abstractmethod
    def explain(self, items: Sequence) -> list[Explanation]:
        """Predict each item and attribute the predicted class to its units."""

    @abstractmethod
    def probability_without(self, explanation: Explanation, units: np.ndarray) -> float:
        """The predicted class's probability once the given units (indices) are deleted from the input."""

    @abstractmethod
    def save(self, explanation: Explanation, file: Path) -> Path:
        """Write the explanation for a person to look at (a PNG overlay, an HTML snippet)."""

    def file_stem(self, item: Any) -> str:
        """A short name for the file an item's explanation is saved to."""
        return "item"

    def describe(self, explanation: Explanation, top: int = 5) -> list[tuple[str, float]]:
        """The most positively attributed named units (empty where units have no names, e.g. pixels)."""
        if not explanation.units:
            return []
        order = np.argsort(-explanation.attributions)[:top]
        return [(explanation.units[i], float(explanation.attributions[i])) for i in order]


def explanation_folder(out: str | Path) -> Path:
    """The folder explanations are written to, made now: a file there, or a folder that cannot be written, is a
    one-line error before any work (not a crash after the first explanation)."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise HeadstartError(f"--out {folder} is a file: give a folder for the explanations (it is left as it is)")
    check_writable(folder, f"--out {folder}")
    return folder


EXPLAINERS: dict[str, dict[str, type[Explainer]]] = {}  # modality -> name -> explainer
DEFAULT_EXPLAINERS: dict[str, str] = {}


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: an explainer of models of `cls.modality`, chosen by `cls.name`; the modality's default
    when `cls.default` (or when it is the modality's first)."""
    EXPLAINERS.setdefault(cls.modality, {})[cls.name] = cls
    if cls.default or cls.modality not in DEFAULT_EXPLAINERS:
        DEFAULT_EXPLAINERS[cls.modality] = cls.name
    return cls


def explainer_for(model: TrainedModel, method: str | None = None) -> Explainer:
    """The explainer `method` names for the model's modality (its default when None). Explanations attribute one
    predicted class, so a model of another task (multilabel, regression) is refused."""
    if not model.task.one_class_per_item:
        raise HeadstartError(f"explanations are for classification models; this model is {model.task_name} (not "
                             "supported yet)")
    methods = EXPLAINERS.get(model.modality)
    if not methods:
        known = ", ".join(f"{m} ({', '.join(c)})" for m, c in EXPLAINERS.items())
        raise HeadstartError(f"explanations are not supported yet for {model.modality} models (supported: {known})")
    name = method or DEFAULT_EXPLAINERS[model.modality]
    if name not in methods:
        raise HeadstartError(f"no explanation method {name!r} for {model.modality} models: choose one of "
                             f"{', '.join(methods)}")
    return methods[name](model)
