"""The codecs for serving, one module per modality (registration happens on import)."""

from __future__ import annotations

from . import audio_codec, image_codec, text_codec  # noqa: F401  (registration)
from .codec_base import CODECS, InputCodec, get_codec, register_codec

__all__ = ["CODECS", "InputCodec", "get_codec", "register_codec"]
