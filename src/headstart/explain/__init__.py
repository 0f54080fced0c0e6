"""Explanations of single predictions: what in an input made the model choose its label.

Explainers are registered by modality and method name, one the modality's default (images: occlusion,
explain/occlusion.py, or Grad-CAM, explain/image.py; texts: Integrated Gradients over the input embeddings,
explain/text.py). Which layer Grad-CAM explains is the backbone family's choice (`Backbone.explain_layer`), never
the explainer's. `deletion_check` (faithfulness.py) tests that the
attributions point at what the model uses.
"""

from . import image, occlusion, text  # noqa: F401  (register the explainers)
from .base import Explainer, Explanation, explainer_for, explanation_folder
from .faithfulness import deletion_check

__all__ = ["Explainer", "Explanation", "deletion_check", "explainer_for", "explanation_folder"]
