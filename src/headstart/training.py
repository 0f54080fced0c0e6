"""Settings shared by the training loops (finetune's stage 2 and pretraining), without importing Lightning."""

from __future__ import annotations

import torch

from ._util import autocast_dtype, default_device

PRECISIONS = ("auto", "fp32", "bf16")


def lightning_precision(precision: str) -> str:
    """Lightning's precision flag for ours: auto means bfloat16 where the device is fast at it."""
    dtype = {"auto": autocast_dtype(default_device()), "fp32": None, "bf16": torch.bfloat16}[precision]
    return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}.get(dtype, "32-true")
