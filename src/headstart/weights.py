"""Weights on disk: safetensors only (never pickle), every failure a one-line error that names the file."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .errors import ArtifactError


def is_pickle_refusal(error: BaseException) -> bool:
    """True when torch.load(weights_only=True) refused a file because it holds more than plain tensors."""
    import pickle

    return isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error)


def save_weights(module: nn.Module, file: Path) -> None:
    from safetensors.torch import save_model

    save_model(module, str(file))


def load_weights(module: nn.Module, file: Path, device: str = "cpu") -> None:
    """Load `file` into `module`, strictly: every tensor present, with the right shape."""
    from safetensors.torch import load_model

    if not file.is_file():
        raise ArtifactError(f"{file} is missing; the folder is incomplete: save it again")
    try:
        missing, unexpected = load_model(module, str(file), strict=False, device=device)
    except RuntimeError as e:  # shape mismatches (size mismatch for head.layers.1.weight ...)
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e).splitlines()[0])
        raise ArtifactError(f"{file} does not fit the model its manifest describes ({detail[:200]})") from None
    except Exception as e:  # truncated, not safetensors (a pickle, garbage), unreadable
        raise ArtifactError(f"{file} is not a readable safetensors file ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'}); the folder is damaged") from None
    if missing or unexpected:
        names = ", ".join(sorted(missing or unexpected)[:3])
        raise ArtifactError(f"{file} {'lacks' if missing else 'has unexpected'} tensors ({names}, ...): it does not "
                            "belong to the model its manifest describes")
