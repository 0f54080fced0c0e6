"""Image explanations over a grid of cells, drawn over the image as a PNG heat map: Grad-CAM here (Selvaraju et
al. 2017, captum's LayerGradCam on the layer the backbone family names, `explain_layer`), occlusion in
occlusion.py.

The units of an explanation are cells (Grad-CAM: its layer's map, 7x7 for EfficientNet at 224 px; it says nothing
finer). Deleting whole cells for both the top-attributed and the random choice compares like with like in the
deletion test (scattered single pixels are noise no photo has, and hurt a CNN more than any region).

A deleted cell is replaced by the image blurred at the cell's own scale (a Gaussian whose sigma is one cell's
side), as Fong & Vedaldi (2017, "Interpretable Explanations of Black Boxes by Meaningful Perturbation") delete
regions, rather than by the mean colour RISE uses: flat grey blocks have sharp edges no photo has, and on CIFAR-10
ten of them hurt lite0 about as much wherever they fall (Grad-CAM's top cells beat random ones on 64% of images
with grey blocks, 78.5% with blur; benchmarks/RESULTS.md, "Issue 12").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .._util import atomic_write_bytes
from ..errors import DataError
from ..modalities.image import open_image
from .base import Explainer, Explanation, register_explainer


class ImageCellExplainer(Explainer):
    """What image explainers share: the model's input tensor, deletion of cells, the PNG overlay."""

    modality = "image"

    def file_stem(self, item) -> str:
        return Path(item).stem if isinstance(item, (str, Path)) else "image"

    def _tensor(self, item) -> torch.Tensor:
        try:
            image = open_image(item)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            detail = "not an image file" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
            raise DataError(f"{item} cannot be read as an image ({detail}): remove it or give the images one by "
                            "one") from None
        return self.model.backbone.transform(train=False)(image).unsqueeze(0)

    def _explanation(self, item, x: torch.Tensor, target: int, score: float, cells: np.ndarray,
                     blurred: torch.Tensor | None = None) -> Explanation:
        """`cells` (rows, columns) of attributions to class `target` for input `x`; `blurred`: `x` blurred at
        the cells' scale, when the explainer has made it already."""
        grid = tuple(cells.shape)
        blurred = blurred_at_cell_scale(x, grid) if blurred is None else blurred
        return Explanation(item, self.model.classes[target], target, score,
                           cells.reshape(-1).astype(np.float32), inputs=(x, grid, blurred))

    def probability_without(self, explanation: Explanation, units: np.ndarray) -> float:
        """Deleted cells show the image blurred at the cell's scale (module docstring)."""
        x, grid, blurred = explanation.inputs
        mask = cell_masks(grid, tuple(x.shape[-2:]))[torch.as_tensor(units)].sum(0, keepdim=True).clamp(max=1)
        return float(self.probabilities(x * (1 - mask) + blurred * mask)[0, explanation.label_index])

    def save(self, explanation: Explanation, file: Path) -> Path:
        """The image at its own size with the heat map (jet, 45% opacity) over it."""
        import io

        from matplotlib import colormaps
        from PIL import Image

        image = open_image(explanation.item).convert("RGB")
        heat = explanation.attributions.reshape(explanation.inputs[1])
        heat = heat / heat.max() if heat.max() > 0 else np.zeros_like(heat)
        layer = Image.fromarray((colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)).resize(image.size,
                                                                                               Image.BILINEAR)
        buffer = io.BytesIO()
        Image.blend(image, layer, 0.45).save(buffer, format="PNG")
        atomic_write_bytes(file, buffer.getvalue())
        return file


@register_explainer
class GradCamExplainer(ImageCellExplainer):
    name = "gradcam"
    method = "Grad-CAM (Selvaraju et al. 2017, captum LayerGradCam)"
    file_suffix = ".gradcam.png"

    def explain(self, items: Sequence) -> list[Explanation]:
        from captum.attr import LayerGradCam

        cam = LayerGradCam(self.net, self.layer)
        out = []
        for item in items:
            x = self._tensor(item)
            probs = self.probabilities(x)[0]
            target = int(probs.argmax())
            cells = cam.attribute(x, target=target, relu_attributions=True).detach()
            out.append(self._explanation(item, x, target, float(probs[target]), cells[0, 0].numpy()))
        return out


def cell_masks(grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """One (1, 1, H, W) 0/1 mask per cell of a rows x columns grid over an H x W image, stacked: (cells, 1, H, W).
    Cells at nearest-neighbour borders, so that they tile the image whatever its size."""
    cells = torch.eye(grid[0] * grid[1]).view(-1, 1, *grid)
    return torch.nn.functional.interpolate(cells, size=size, mode="nearest")


def blurred_at_cell_scale(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """`x` (N, C, H, W) under a Gaussian blur whose sigma is one grid cell's side.

    Blurred at a lower resolution and upsampled: a blur that wide keeps nothing finer than a few pixels of the
    reduced image, and a 193-tap kernel at full size costs about a second an image on a CPU.
    """
    from torchvision.transforms.v2.functional import gaussian_blur

    size = tuple(x.shape[-2:])
    sigma = max(size[0] / grid[0], size[1] / grid[1])
    factor = max(1, int(sigma // 4))  # the reduced image still has 4 pixels per sigma
    small = torch.nn.functional.interpolate(x, scale_factor=1 / factor, mode="area") if factor > 1 else x
    reduced_sigma = sigma / factor
    kernel = min(2 * round(3 * reduced_sigma) + 1, 2 * ((min(small.shape[-2:]) - 1) // 2) + 1)
    small = gaussian_blur(small, kernel_size=[kernel, kernel], sigma=[reduced_sigma, reduced_sigma])
    return torch.nn.functional.interpolate(small, size=size, mode="bilinear", align_corners=False)
