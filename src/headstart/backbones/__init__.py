"""Backbones: one interface, one module per family, and a registry of names."""

from .base import Backbone, ImageBackbone, TextBackbone
from .registry import BackboneInfo, backbone_from_spec, list_backbones, resolve_backbone

__all__ = [
           "Backbone",
           "BackboneInfo",
           "ImageBackbone",
           "TextBackbone",
           "backbone_from_spec",
           "list_backbones",
           "resolve_backbone",
]
