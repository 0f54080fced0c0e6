"""Backbones: one interface (base.py), a registry of names and families (registry.py), one module per family.

Importing this package registers the built-in families; a plug-in family is one more module that uses the
registry's decorators.
"""

# hf_text registers first: `hf:<id>` with no data to say otherwise is a text encoder.
from . import hf_text  # noqa: F401  (registration)

# isort: split
from . import (  # noqa: F401  (registration)
    efficientnet_lite,
    folder,
    hf_audio,
    smallcnn,
    smallcnn_audio,
    speech_embedding,
    timm_image,
)
from .base import AudioBackbone, Backbone, ImageBackbone, TextBackbone
from .registry import (
    BackboneInfo,
    BackboneOptions,
    backbone_from_spec,
    list_backbones,
    register_backbone,
    register_family,
    register_folder_kind,
    resolve_backbone,
)

__all__ = [
    "AudioBackbone",
    "Backbone",
    "BackboneInfo",
    "BackboneOptions",
    "ImageBackbone",
    "TextBackbone",
    "backbone_from_spec",
    "list_backbones",
    "register_backbone",
    "register_family",
    "register_folder_kind",
    "resolve_backbone",
]
