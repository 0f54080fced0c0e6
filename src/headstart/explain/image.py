"""Image explanations over a grid of cells, saved as a PNG of the image beside its heat map, with a colour bar
(`side_by_side_png`): Grad-CAM here (Selvaraju et al. 2017, captum's LayerGradCam on the layer the backbone family
names, `explain_layer`), occlusion in occlusion.py.

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
from typing import ClassVar

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
    colour_meaning: ClassVar[str]  # what the colour bar measures, with {label} for the predicted label

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
        """A PNG a person can read without this code: the image and the heat map over it side by side, a colour
        bar that says what the colours measure, and the predicted label and score as the title."""
        heat = explanation.attributions.reshape(explanation.inputs[1])
        png = side_by_side_png(open_image(explanation.item).convert("RGB"), heat, explanation.label,
                               explanation.score, heat_caption=self.name,
                               colour_meaning=self.colour_meaning.format(label=_short(explanation.label, 24)))
        atomic_write_bytes(file, png)
        return file


@register_explainer
class GradCamExplainer(ImageCellExplainer):
    name = "gradcam"
    method = "Grad-CAM (Selvaraju et al. 2017, captum LayerGradCam)"
    file_suffix = ".gradcam.png"
    colour_meaning = "Grad-CAM weight for {label}"

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


# The layout of the PNG `side_by_side_png` draws, in pixels.
PANEL_HEIGHTS = (224, 512)  # small images are enlarged to the first height, large ones reduced to the second
PANEL_MAX_WIDTH = 1024  # panoramas are reduced further, to this width
MARGIN = 8
TITLE_BAND = 48  # above the panels: the title, then each panel's caption
COLOUR_BAR = (14, 96)  # the bar's width, and the room right of the panels for the bar, its ticks and its label
HEAT_OPACITY = 0.45
HEAT_COLOURS = "jet"


def panel_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size an image of `size` (width, height) is shown at: its height within PANEL_HEIGHTS, tall enough for
    the colour bar's label, and its width at most PANEL_MAX_WIDTH."""
    width, height = size
    scale = min(max(height, PANEL_HEIGHTS[0]), PANEL_HEIGHTS[1]) / height
    scale = min(scale, PANEL_MAX_WIDTH / width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def side_by_side_png(image, heat: np.ndarray, label: str, score: float, heat_caption: str,
                     colour_meaning: str) -> bytes:
    """PNG bytes: `image` (PIL, RGB) on the left, the same image under `heat` (a grid of attributions, 45% jet)
    on the right, a colour bar from 0 to the largest attribution labelled `colour_meaning`, and the predicted
    `label` and its `score` above.

    Drawn with matplotlib's object API (no pyplot: no global state, no backend to choose); the panels are placed
    pixel for pixel with `figimage`, so the left one is the image exactly as enlarged or reduced. Attributions
    below 0 (occlusion: hiding the cell raised the score) show as 0, and the bar gets a triangle at its foot.
    """
    import io
    import textwrap

    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from PIL import Image

    width, height = panel_size(image.size)
    shown = image.resize((width, height), Image.NEAREST if width >= image.size[0] else Image.LANCZOS)
    top = float(heat.max())
    scale = top if top > 0 else 1.0
    layer = Image.fromarray((colormaps[HEAT_COLOURS](np.clip(heat / scale, 0, 1))[..., :3] * 255).astype(np.uint8))
    overlay = Image.blend(shown, layer.resize((width, height), Image.BILINEAR), HEAT_OPACITY)

    total = (3 * MARGIN + 2 * width + COLOUR_BAR[1], TITLE_BAND + height + MARGIN)
    dpi = 100
    figure = Figure(figsize=(total[0] / dpi, total[1] / dpi), dpi=dpi, facecolor="white")
    for left, panel in ((MARGIN, shown), (2 * MARGIN + width, overlay)):
        figure.figimage(np.asarray(panel), xo=left, yo=MARGIN, origin="upper")
    text = {"parse_math": False, "ha": "center", "va": "center"}  # labels are the user's text: "$" is no formula
    title = f"predicted: {_short(label, max(8, total[0] // 9 - 20))} ({score:.2f})"  # ~9 px a bold character
    figure.text(0.5, 1 - 14 / total[1], title, fontsize=11, fontweight="bold", **text)
    for left, caption in ((MARGIN, "input"), (2 * MARGIN + width, heat_caption)):
        figure.text((left + width / 2) / total[0], 1 - 38 / total[1], caption, fontsize=9, **text)
    below = heat.min() < 0
    foot = round(0.06 * height) if below else 0  # room for the triangle under the bar
    bar = figure.add_axes(((3 * MARGIN + 2 * width) / total[0], (MARGIN + foot) / total[1],
                           COLOUR_BAR[0] / total[0], (height - foot) / total[1]))
    colours = ScalarMappable(Normalize(0.0, scale), colormaps[HEAT_COLOURS])
    colour_bar = figure.colorbar(colours, cax=bar, extend="min" if below else "neither")
    colour_bar.set_label(textwrap.fill(colour_meaning, max(16, height // 6)), fontsize=8, parse_math=False)
    colour_bar.ax.tick_params(labelsize=7)
    drawn = io.BytesIO()
    figure.savefig(drawn, format="png", dpi=dpi, facecolor="white")
    drawn.seek(0)
    buffer = io.BytesIO()
    Image.open(drawn).convert("RGB").save(buffer, format="PNG")  # matplotlib writes RGBA; no pixel here is transparent
    return buffer.getvalue()


def _short(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis: long class names must not run off the picture."""
    return text if len(text) <= limit else text[:limit - 1] + "…"
