"""Classification heads placed on top of a backbone's embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

HEAD_KINDS = ("linear", "mlp")


class Standardize(nn.Module):
    """Fixed per-feature centring and scaling, fitted once on training embeddings and saved with the head."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit(self, embeddings: torch.Tensor) -> None:
        """Centre and scale; variances are shrunk towards their mean, so that features (nearly) constant in a
        small training set do not blow up on new data."""
        var = embeddings.var(0) if len(embeddings) > 1 else torch.zeros_like(embeddings[0])
        self.mean.copy_(embeddings.mean(0))
        self.scale.copy_((var + 0.1 * var.mean() + 1e-12).rsqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) * self.scale


class ClassificationHead(nn.Module):
    """`linear`: standardise -> dropout -> linear. `mlp`: the classic recipe's Dense(1024, relu) -> Dense(n).

    The logits are divided by `temperature` (1 until `calibrate` fits it): every path that runs the head (predict,
    evaluate, the server, the exported ONNX graph) gives calibrated probabilities. The temperature is metadata
    (in the manifest's head config), not a weight, so models saved before calibration existed load unchanged.
    """

    def __init__(self, in_dim: int, n_classes: int, kind: str = "linear", hidden: int = 1024, dropout: float = 0.1,
                 temperature: float = 1.0):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head must be one of {HEAD_KINDS}, got {kind!r}")
        self.config = {"kind": kind, "in_dim": in_dim, "n_classes": n_classes, "hidden": hidden, "dropout": dropout,
                       "temperature": float(temperature)}
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)
        self.standardize = Standardize(in_dim)
        if kind == "linear":
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_classes))
        else:
            self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(hidden, n_classes))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClassificationHead:
        return cls(**config)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(self.standardize(embeddings)) / self.temperature

    def set_temperature(self, temperature: float) -> None:
        self.temperature.fill_(float(temperature))
        self.config["temperature"] = float(temperature)

    @torch.no_grad()
    def calibrate(self, embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, Any]:
        """Fit the temperature on held-out embeddings and labels (temperature scaling) and keep it only when it
        passes cross-validated acceptance on them (`choose_temperature`, folds drawn with `seed`); returns a
        JSON-ready record: the temperature, the acceptance test's numbers, and the held-out NLL and ECE before
        and after. When the held-out set cannot support a fit (too small, or no mistakes) or the fitted
        temperature does not beat T = 1 beyond noise, the temperature stays 1 and the record says why."""
        from .evaluation.calibration import choose_temperature, softmax, why_not_calibrate
        from .evaluation.metrics import expected_calibration_error, negative_log_likelihood

        self.eval()
        self.set_temperature(1.0)
        logits = self(torch.from_numpy(embeddings)).double().numpy()
        before = softmax(logits)
        reason = why_not_calibrate(logits, labels)
        acceptance = None
        if reason is None:
            choice = choose_temperature(logits, labels, seed=seed)
            reason, acceptance = choice.reason, choice.record()
            self.set_temperature(choice.temperature)
        after = softmax(logits / self.config["temperature"])
        return {"method": "temperature" if reason is None else "none", "temperature": self.config["temperature"],
                "n": len(labels), **({"reason": reason} if reason else {}),
                **({"acceptance": acceptance} if acceptance else {}),
                "nll_before": negative_log_likelihood(before, labels), "nll_after": negative_log_likelihood(after, labels),
                "ece_before": expected_calibration_error(before, labels),
                "ece_after": expected_calibration_error(after, labels)}

    @torch.no_grad()
    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Class probabilities (items x classes) of float32 embeddings, in eval mode."""
        self.eval()
        return torch.softmax(self(torch.from_numpy(embeddings)), dim=1).numpy()


class Classifier(nn.Module):
    """Backbone followed by head: inputs -> logits."""

    def __init__(self, backbone: nn.Module, head: ClassificationHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, batch: Any) -> torch.Tensor:
        return self.head(self.backbone(batch))
