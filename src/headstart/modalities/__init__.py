"""Modalities: one module per kind of item (image, text, audio), registered by name. See base.py for the interface."""

from . import audio, image, text  # noqa: F401  (registration)
from .base import MODALITIES, Modality, ensure_same_modality, get_modality, modality_of_file, register_modality

__all__ = ["MODALITIES", "Modality", "ensure_same_modality", "get_modality", "modality_of_file", "register_modality"]
