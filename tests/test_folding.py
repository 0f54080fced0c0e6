"""BatchNorm folding for inference: same embeddings, fewer modules, original untouched, unsafe cases refused."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from headstart import embeddings
from headstart.backbones import resolve_backbone
from headstart.backbones.folding import conv_bn_pairs, folded_copy
from headstart.modalities import get_modality

from .conftest import make_image_folder


def _with_running_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so folding has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(m.num_features, generator=g))
                m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_folded_smallcnn_computes_the_same_without_batchnorm():
    backbone = _with_running_statistics(resolve_backbone("smallcnn"))
    x = torch.randn(3, 3, backbone.image_size, backbone.image_size)
    folded = folded_copy(backbone, x[:2])
    assert folded is not backbone
    assert _count(folded, nn.BatchNorm2d) == 0 < _count(backbone, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), backbone(x), rtol=1e-4, atol=1e-5)


def test_folding_handles_timm_batchnorm_with_activation():
    backbone = _with_running_statistics(resolve_backbone("efficientnet_lite0"))
    x = torch.randn(2, 3, 64, 64)
    pairs, _ = conv_bn_pairs(backbone, x)
    assert len(pairs) == _count(backbone, nn.BatchNorm2d)  # every BatchNormAct2d follows a convolution
    folded = folded_copy(backbone, x)
    assert _count(folded, nn.BatchNorm2d) == 0
    with torch.no_grad():
        expected = backbone(x)
        assert (folded(x) - expected).norm() / expected.norm() < 1e-4


class ConvOutputUsedTwice(nn.Module):
    """A convolution whose output feeds a BatchNorm and also a skip connection: folding would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_folding_is_refused_when_it_would_change_the_output():
    model = _with_running_statistics(ConvOutputUsedTwice())
    assert conv_bn_pairs(model, torch.randn(1, 3, 8, 8))[0] == [("conv", "bn")]
    assert folded_copy(model, torch.randn(1, 3, 8, 8)) is model


class Unusual(nn.Module):
    """A grouped conv with bias into an affine-free BN (folds); a shared conv -> BN pair called twice and a
    conv -> in-place ReLU -> BN (both must not fold)."""

    def __init__(self):
        super().__init__()
        self.grouped, self.plain_bn = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=True), nn.BatchNorm2d(4, affine=False)
        self.shared, self.shared_bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.before_relu, self.after_relu = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        x = self.plain_bn(self.grouped(x))
        x = self.shared_bn(self.shared(self.shared_bn(self.shared(x))))
        return self.after_relu(torch.relu_(self.before_relu(x)))


def test_folding_skips_shared_modules_and_in_place_changes_and_folds_the_rest():
    model = _with_running_statistics(Unusual())
    x = torch.randn(2, 4, 8, 8)
    pairs, _ = conv_bn_pairs(model, x)
    assert pairs == [("grouped", "plain_bn")]
    folded = folded_copy(model, x)
    assert isinstance(folded.plain_bn, nn.Identity) and isinstance(folded.shared_bn, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_embeddings_are_the_same_with_folding_and_the_backbone_is_untouched(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "imgs", per_class=4)
    items = get_modality("image").list_files(root / "red") + get_modality("image").list_files(root / "blue")
    backbone = _with_running_statistics(resolve_backbone("smallcnn"))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    monkeypatch.setattr(embeddings, "FOLD_MIN_ITEMS", 10**9)
    assert backbone.inference_copy(torch.device("cpu"), fold=False) is backbone
    plain, _ = embeddings.compute_embeddings(backbone, items, precision="fp32")
    monkeypatch.setattr(embeddings, "FOLD_MIN_ITEMS", 1)
    assert _count(backbone.inference_copy(torch.device("cpu"), fold=True), nn.BatchNorm2d) == 0
    folded, _ = embeddings.compute_embeddings(backbone, items, precision="fp32")
    np.testing.assert_allclose(folded, plain, rtol=1e-4, atol=1e-5)
    after = backbone.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
