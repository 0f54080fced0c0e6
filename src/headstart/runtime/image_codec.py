"""Images for an exported graph: decode with Pillow, resize, normalise, NCHW float32; no torch."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ArtifactError, DataError, InputTooLarge
from .codec_base import InputCodec, expand_files, register_codec, validate_preprocessing
from .members import StoredItem

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
INTERPOLATION = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

_Channels = Annotated[list[float], Field(min_length=3, max_length=3)]


class ImagePreprocessing(BaseModel):
    """What `prepare` reads from the sidecar, checked at load (strict: a mean of strings is damage, not data)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    image_size: int = Field(ge=1)
    mean: _Channels
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=3, max_length=3)]
    input: str = "pixels"


def _to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer images (16-bit PNG, TIFF) scaled to 8 bits: PIL's convert('L') would clip them."""
    pixels = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert grayscale (8 or 16 bits), palette, RGBA (composited on white) and CMYK images to RGB."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):
        img = _to_8bit(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def read_image(source: Any, draft_size: tuple[int, int] | None = None, max_pixels: int | None = None,
               setting: str = "--max-pixels") -> Image.Image:
    """Fully decode a file path, file object, stored item (`members.StoredItem`) or uint8 array (H, W[, C]) to an
    RGB image. `draft_size` lets JPEG decode at reduced scale when it is larger (as training did). With
    `max_pixels`, an image that would decode to more pixels (after JPEG's reduction) is refused from its header,
    before decoding: InputTooLarge, naming `setting`. (Pillow itself only warns below 178 Mpx, and fails with
    DecompressionBombError above.)"""
    if isinstance(source, np.ndarray):
        return to_rgb(Image.fromarray(source))
    if isinstance(source, StoredItem):  # a tar member or Parquet cell: its bytes only
        try:
            return read_image(source.open(), draft_size, max_pixels, setting)
        except UnidentifiedImageError:  # Pillow would name the in-memory buffer, not the item
            raise UnidentifiedImageError(f"{source} is not an image file Pillow can read") from None
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(source) as img:  # reads the header only
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise InputTooLarge(f"the image is {width:,} x {height:,} = {width * height:,} pixels; the limit is "
                                f"{max_pixels:,} ({setting} sets it)")
        img.load()
        return to_rgb(img)


@register_codec
class ImageCodec(InputCodec):
    modality = "image"
    takes_uploads = True
    raw_media_type = "image/*"

    @property
    def size(self) -> int:
        return int(self.preprocessing["image_size"])

    def check_preprocessing(self) -> None:
        validate_preprocessing(ImagePreprocessing, self.preprocessing)

    def input_names(self) -> list[str]:
        return [self.preprocessing.get("input", "pixels")]

    def check_graph(self, inputs: dict[str, list[int | None]]) -> None:
        shape = inputs.get(self.input_names()[0], [])
        if len(shape) == 4 and (shape[1] not in (3, None) or {shape[2], shape[3]} - {self.size, None}):
            raise ArtifactError(f"the graph takes {'x'.join(str(d) for d in shape[1:])} images but the description "
                                f"says 3x{self.size}x{self.size} (preprocessing.image_size {self.size})")

    def decode_upload(self, data: bytes, filename: str) -> np.ndarray:
        """An uploaded image as a uint8 RGB array (decoded at reduced scale when a JPEG is much larger)."""
        if not data:
            raise DataError(f"{filename or 'the file'} is empty")
        limits = self.decode_limits
        try:
            return np.asarray(read_image(io.BytesIO(data), (2 * self.size, 2 * self.size), limits.max_pixels,
                                         limits.pixels_setting))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            detail = "not an image file" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
            raise DataError(f"{filename or 'the file'} cannot be decoded as an image ({detail})") from None

    def expand_input(self, raw: str) -> list:
        return expand_files(raw, IMAGE_EXTENSIONS, "image", "an image model takes image files or folders")

    def prepare(self, item: Any) -> np.ndarray:
        """Resize to the graph's square input and normalise: (3, size, size) float32."""
        p = self.preprocessing
        img = read_image(item, (2 * self.size, 2 * self.size))
        resample = INTERPOLATION.get(p.get("interpolation", "bilinear"), Image.Resampling.BILINEAR)
        pixels = np.asarray(img.resize((self.size, self.size), resample), dtype=np.float32) / 255.0
        pixels = (pixels - np.asarray(p["mean"], np.float32)) / np.asarray(p["std"], np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def feeds(self, prepared: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {self.preprocessing.get("input", "pixels"): np.stack(prepared).astype(np.float32, copy=False)}
