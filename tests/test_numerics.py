"""Hand-written numerics checked against references: calibration error, the learning-rate schedule, the head's
standardisation, and the embedding-cache key."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import headstart
from headstart.evaluation.metrics import expected_calibration_error
from headstart.heads import Classifier, LinearHead, Standardize


def test_ece_matches_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2000, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, 2000)
    reference = multiclass_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), num_classes=5,
                                             n_bins=15, norm="l1").item()
    assert expected_calibration_error(probs, labels) == pytest.approx(reference, abs=1e-6)
    perfect = np.eye(5)[labels]
    assert expected_calibration_error(perfect, labels) == 0.0


def test_finetune_schedule_warms_up_then_decays_to_zero():
    from headstart.strategies import FineTune
    from headstart.strategies.finetune_trainer import FineTuneModule

    backbone = headstart.resolve_backbone("smallcnn")
    module = FineTuneModule(Classifier(backbone, LinearHead(128, 2)), 1e-3, 1.0,
                            FineTune(warmup_fraction=0.1), total_steps=100)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[-1]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[5] == pytest.approx(5e-4) and rates[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # cosine: never rises after warm-up
    assert rates[55] == pytest.approx(5e-4, rel=1e-2) and rates[-1] < 1e-6


def test_standardize_centres_scales_and_tames_constant_features():
    x = torch.randn(500, 4) * torch.tensor([1.0, 10.0, 0.1, 0.0]) + torch.tensor([5.0, -3.0, 0.0, 7.0])
    s = Standardize(4)
    s.fit(x)
    z = s(x)
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)
    # each variance is padded with 0.1 of the mean variance: large features end near unit scale, small ones stay
    # small, and a constant feature is not blown up on new data
    var = x.var(0)
    expected = (var / (var + 0.1 * var.mean())).sqrt()
    assert torch.allclose(z.std(0), expected, rtol=1e-4)
    assert z[:, 1].std() > 0.98 and z[:, 2].std() < 0.2
    assert s(torch.tensor([[5.0, -3.0, 0.0, 8.0]]))[0, 3].abs() < 1.0


def test_cache_key_changes_when_filters_are_permuted():
    """Sums of the weights do not change when a convolution's filters swap places; the key must."""
    backbone = headstart.resolve_backbone("smallcnn")
    before = backbone.fingerprint()
    conv = backbone.blocks[0][0]
    with torch.no_grad():
        conv.weight.copy_(conv.weight[torch.tensor([1, 0, *range(2, conv.out_channels)])])
    assert backbone.fingerprint() != before
    assert headstart.resolve_backbone("smallcnn").fingerprint() != headstart.resolve_backbone("smallcnn").fingerprint()


def test_cache_key_is_hashed_once_per_backbone(monkeypatch):
    from headstart.backbones import base

    calls = []
    original = base.weights_digest
    monkeypatch.setattr(base, "weights_digest", lambda state: calls.append(1) or original(state))
    backbone = headstart.resolve_backbone("smallcnn")
    keys = {backbone.fingerprint() for _ in range(3)}
    assert len(keys) == 1 and len(calls) == 1
    with torch.no_grad():
        backbone.blocks[0][0].weight.mul_(2.0)  # in place: counted by the tensor's version
    assert backbone.fingerprint() not in keys and len(calls) == 2


def test_file_digest_works_without_hashlib_file_digest(tmp_path, monkeypatch):
    from headstart.modalities.image import file_digest

    path = tmp_path / "x.bin"
    path.write_bytes(b"abc" * 1_000_000)
    monkeypatch.delattr(hashlib, "file_digest", raising=False)  # Python 3.10 has none
    assert file_digest(path) == hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
