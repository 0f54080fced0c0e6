"""Settings shared by the training loops (finetune's stage 2 and pretraining), without importing Lightning."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ._util import default_device, precision_dtype
from .errors import ArtifactError
from .weights import is_pickle_refusal

PRECISIONS = ("auto", "fp32", "bf16")


def lightning_precision(precision: str) -> str:
    """Lightning's precision flag for ours: auto means bfloat16 where the device is fast at it."""
    dtype = precision_dtype(precision, default_device())
    return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}.get(dtype, "32-true")


def check_checkpoint(path: Path, module: nn.Module) -> int:
    """A checkpoint to resume from must load without pickle and hold this model's tensors, shape for shape.
    Returns the number of epochs it completed."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["state_dict"]
        done = int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except Exception as e:
        if is_pickle_refusal(e):
            raise ArtifactError(f"{path} needs pickle to load (it was not written by headstart), and headstart never "
                                "unpickles: delete it and run without --resume") from None
        raise ArtifactError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                            "): delete it and run without --resume") from None
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    if found != expected:
        raise ArtifactError(f"{path} was written for another model (its tensors differ from this run's): run without "
                            "--resume, or give the --out of the interrupted run")
    return done
