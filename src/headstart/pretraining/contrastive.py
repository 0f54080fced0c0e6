"""`contrastive`: SimCLR, Chen et al., "A simple framework for contrastive learning of visual representations"
(ICML 2020). Two random augmentations of each image; a projection head g (Linear-BN-ReLU-Linear, 128-d) on the
backbone's embedding; the NT-Xent loss pulls the two views of an image together and pushes the other 2(N-1)
views of the batch away. The head is dropped afterwards: the embedding before it transfers better (paper, 4.2).

Augmentations follow the paper's recipes, chosen by image size and colour:
- large images (> 64 px): random resized crop (scale 0.08-1), flip, colour jitter (0.4, 0.4, 0.4, 0.1) with
  p=0.8, grayscale p=0.2, Gaussian blur p=0.5 (the ImageNet recipe);
- small colour images (CIFAR-like): the same without blur (the paper's CIFAR-10 recipe, Appendix B.9);
- small grayscale images (MNIST-like): a milder crop (scale 0.3-1) so that a view keeps the object, flips,
  brightness/contrast jitter only (hue, saturation and grayscale conversion do nothing without colour).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..backbones.base import ImageBackbone
from .base import ImageObjective, register_objective


class SimCLRProjectionHead(nn.Sequential):
    """g(h) = W2 relu(BN(W1 h)), as in SimCLR (and lightly's SimCLRProjectionHead)."""

    def __init__(self, dim: int, hidden: int | None = None, out: int = 128):
        hidden = hidden or dim
        super().__init__(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2N views (SimCLR eq. 1), in float32.

    Hand-written (a few lines of cross entropy) rather than adding a self-supervised library as a dependency.
    """
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own positive or negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return nn.functional.cross_entropy(logits, targets)


def simclr_augmentation(size: int, mean, std, grayscale: bool) -> Callable:
    """PIL image -> normalised tensor, one random view."""
    from torchvision.transforms import v2 as T

    small = size <= 64
    crop_scale = (0.3, 1.0) if (small and grayscale) else (0.08, 1.0)
    steps: list = [T.PILToTensor(), T.RandomResizedCrop((size, size), scale=crop_scale, antialias=True),
                   T.RandomHorizontalFlip()]
    if grayscale:
        steps.append(T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8))
    else:
        steps += [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]
    if not small:
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
        steps.append(T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(steps)


class TwoViews:
    """Applies the same random pipeline twice (picklable, for DataLoader workers)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image), self.transform(image)


@register_objective
class SimCLR(ImageObjective):
    name = "contrastive"
    paper = "SimCLR, Chen et al. 2020 (NT-Xent with a projection head)"
    default_lr = 1e-3
    default_batch_size = 256  # negatives come from the batch: larger is better, within memory

    uses_options = ("temperature",)

    def __init__(self, backbone: ImageBackbone, grayscale: bool = False, temperature: float = 0.5,
                 projection_dim: int = 128):
        super().__init__(backbone, grayscale)
        self.temperature = float(temperature)
        self.projection = SimCLRProjectionHead(backbone.embedding_dim, out=projection_dim)
        small = backbone.image_size <= 64
        recipe = "small-grayscale" if small and grayscale else "small-colour" if small else "imagenet"
        self.options = {"temperature": self.temperature, "projection_dim": projection_dim, "augmentation": recipe}

    def transform(self) -> Callable:
        b = self.backbone
        return TwoViews(simclr_augmentation(b.image_size, b.mean, b.std, self.grayscale))

    def loss(self, views) -> torch.Tensor:
        v1, v2 = views
        z = self.projection(self.backbone(torch.cat([v1, v2])))  # one pass: BatchNorm sees both views
        return nt_xent(z[: len(v1)], z[len(v1):], self.temperature)
