"""Grad-CAM (Selvaraju et al. 2017) for image models, with captum's LayerGradCam on the layer the backbone family
names (`explain_layer`), upsampled to the input and drawn over the image as a PNG.

The units of an explanation are the cells of that layer's map (7x7 for EfficientNet at 224 px): Grad-CAM says
nothing finer, and deleting whole cells for both the top-attributed and the random choice compares like with like
in the deletion test (scattered single pixels are noise no photo has, and hurt a CNN more than any region).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._util import atomic_write_bytes
from ..modalities.image import open_image
from .base import Explainer, Explanation, register_explainer


@register_explainer
class GradCamExplainer(Explainer):
    modality = "image"
    method = "Grad-CAM (Selvaraju et al. 2017, captum LayerGradCam)"
    file_suffix = ".gradcam.png"

    def file_stem(self, item) -> str:
        return Path(item).stem if isinstance(item, (str, Path)) else "image"

    def _tensor(self, item) -> torch.Tensor:
        return self.model.backbone.transform(train=False)(open_image(item)).unsqueeze(0)

    def explain(self, items: Sequence) -> list[Explanation]:
        from captum.attr import LayerGradCam

        cam = LayerGradCam(self.net, self.layer)
        out = []
        for item in items:
            x = self._tensor(item)
            probs = self.probabilities(x)[0]
            target = int(probs.argmax())
            cells = cam.attribute(x, target=target, relu_attributions=True).detach()
            out.append(Explanation(item, self.model.classes[target], target, float(probs[target]),
                                   cells[0, 0].numpy().reshape(-1).astype(np.float32), inputs=(x, cells.shape[-2:])))
        return out

    def probability_without(self, explanation: Explanation, units: np.ndarray) -> float:
        """Deleted cells are set to 0 after normalisation, the data set's mean colour (Petsiuk et al. 2018)."""
        x, grid = explanation.inputs
        mask = torch.zeros(1, 1, *grid)
        mask.view(-1)[torch.as_tensor(units)] = 1
        mask = torch.nn.functional.interpolate(mask, size=tuple(x.shape[-2:]), mode="nearest")
        return float(self.probabilities(x * (1 - mask))[0, explanation.label_index])

    def save(self, explanation: Explanation, file: Path) -> Path:
        """The image at its own size with the heat map (jet, 45% opacity) over it."""
        import io

        from matplotlib import colormaps
        from PIL import Image

        image = open_image(explanation.item).convert("RGB")
        heat = explanation.attributions.reshape(tuple(explanation.inputs[1]))
        heat = heat / heat.max() if heat.max() > 0 else heat
        layer = Image.fromarray((colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)).resize(image.size,
                                                                                               Image.BILINEAR)
        buffer = io.BytesIO()
        Image.blend(image, layer, 0.45).save(buffer, format="PNG")
        atomic_write_bytes(file, buffer.getvalue())
        return file
