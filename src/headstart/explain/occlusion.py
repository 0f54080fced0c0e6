"""Occlusion (Zeiler & Fergus 2014) for image models: each cell of a grid over the image is deleted in turn (shown
blurred at its own scale, as the deletion test deletes), and its attribution is how much the predicted class's
probability falls without it. captum's FeatureAblation does the deleting, one cell a feature.

The default for images because it is what the deletion test asks of an explanation, measured: on 200 CIFAR-10
test images (efficientnet_lite0 probe) its top 20% of cells beat a random 20% on 95% of images, Grad-CAM's on
78.5% (benchmarks/RESULTS.md, "Issue 12"). The price is one forward pass a cell (49 on the 7x7 grid: 4.1 s an
image on one thread of a loaded 2-core CPU, Grad-CAM 0.12 s); `--method gradcam` is there for speed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Explanation, register_explainer
from .image import ImageCellExplainer, blurred_at_cell_scale, cell_masks


@register_explainer
class OcclusionExplainer(ImageCellExplainer):
    name = "occlusion"
    method = "occlusion (Zeiler & Fergus 2014, captum FeatureAblation), cells blurred"
    file_suffix = ".occlusion.png"
    colour_meaning = "fall in P({label}) when the cell is blurred"
    default = True
    grid = (7, 7)  # the cells of Grad-CAM on EfficientNet at 224 px: 49 forward passes an image
    cells_per_pass = 25  # occluded copies in one forward batch

    def explain(self, items: Sequence) -> list[Explanation]:
        from captum.attr import FeatureAblation

        ablation = FeatureAblation(self.probabilities)
        out = []
        for item in items:
            x = self._tensor(item)
            probs = self.probabilities(x)[0]
            target = int(probs.argmax())
            cell_of_pixel = cell_masks(self.grid, tuple(x.shape[-2:])).argmax(0, keepdim=True)  # (1, 1, H, W)
            blurred = blurred_at_cell_scale(x, self.grid)
            attributions = ablation.attribute(x, baselines=blurred, target=target,
                                              feature_mask=cell_of_pixel.expand_as(x),
                                              perturbations_per_eval=self.cells_per_pass)
            cells = torch.empty(self.grid[0] * self.grid[1], dtype=attributions.dtype)
            cells[cell_of_pixel.view(-1)] = attributions[0, 0].reshape(-1)  # one value per cell
            out.append(self._explanation(item, x, target, float(probs[target]), cells.view(self.grid).numpy(),
                                         blurred))
        return out

