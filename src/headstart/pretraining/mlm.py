"""`mlm`: continued masked-language-model pretraining of a Transformers encoder on in-domain text.

Follows Gururangan et al., "Don't stop pretraining: adapt language models to domains and tasks" (ACL 2020):
keep training the encoder with its original MLM objective (Devlin et al. 2019: 15% of tokens chosen; of those
80% [MASK], 10% a random token, 10% unchanged) on unlabeled text from the task's domain, then fine-tune.
Masking is transformers' DataCollatorForLanguageModeling (optionally whole-word masking); the model is
AutoModelForMaskedLM: its pre-trained MLM head where the checkpoint has one, else a new head (decoder tied to the
input embeddings, as the library builds it). Only the encoder is saved; the MLM head is dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..backbones import resolve_backbone
from ..backbones.base import Backbone
from ..backbones.hf_text import HFTextBackbone
from ..data.unlabeled import UnlabeledData
from ..errors import BackboneError
from .base import Objective, ObjectiveOptions, register_objective

log = logging.getLogger(__name__)


class _Encoded(torch.utils.data.Dataset):
    """Token ids per text (and character offsets, which whole-word masking uses to find word starts)."""

    def __init__(self, encoded: dict[str, list]):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded["input_ids"])

    def __getitem__(self, i: int) -> dict[str, list]:
        return {k: v[i] for k, v in self.encoded.items()}


def _mlm_model(backbone: HFTextBackbone):
    """AutoModelForMaskedLM with the backbone's encoder weights; the head from the source checkpoint if present."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    config = backbone.model.config
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were newly initialised" is expected and reported below
    try:
        model, head = None, "new"
        source = Path(backbone.source).expanduser() if backbone.source else None
        if source is not None:
            try:
                model, info = AutoModelForMaskedLM.from_pretrained(str(source) if source.is_dir() else backbone.source,
                                                                   local_files_only=True, output_loading_info=True)
                prefix = model.base_model_prefix
                head_missing = [k for k in info["missing_keys"] if not k.startswith(prefix + ".")]
                head = "new" if head_missing else "pre-trained"
            except Exception:
                model = None
        if model is None or model.config.vocab_size != config.vocab_size:
            model, head = AutoModelForMaskedLM.from_config(config), "new"
    except ValueError as e:
        raise BackboneError(f"'{config.model_type}' models have no masked-language-model form in transformers "
                            f"({e}): use a BERT-like encoder such as minilm") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    base = getattr(model, model.base_model_prefix)
    missing, _ = base.load_state_dict(backbone.model.state_dict(), strict=False)
    if missing:
        raise BackboneError(f"the encoder's weights do not fit the MLM model ({len(missing)} missing, e.g. "
                            f"{missing[0]}): use a BERT-like encoder such as minilm")
    model.tie_weights()
    return model, head


@register_objective
class MaskedLanguageModel(Objective):
    name = "mlm"
    modality = "text"
    paper = "Gururangan et al. 2020 (continued MLM pretraining, Devlin et al. 2019 masking)"
    default_lr = 5e-5
    default_batch_size = 32
    default_epochs = 3

    @classmethod
    def create(cls, backbone, data: UnlabeledData, options: ObjectiveOptions) -> MaskedLanguageModel:
        return cls(backbone, whole_word=options.whole_word, seed=options.seed)

    @classmethod
    def starting_backbone(cls, name: str, from_weights: str | None, options: ObjectiveOptions) -> tuple[Backbone, str]:
        """Text always continues from pre-trained weights: the encoder named, or a model folder given with --from."""
        if from_weights is not None:
            if not Path(from_weights).expanduser().is_dir():
                raise BackboneError(f"--from for text must be a model folder; got '{from_weights}' (or give the "
                                    "encoder with --backbone, e.g. minilm, hf:<id> or a folder)")
            name = str(from_weights)
        net = resolve_backbone(name, max_length=options.max_length)
        return net, getattr(net, "source", "") or name

    def __init__(self, backbone: HFTextBackbone, mlm_probability: float = 0.15, whole_word: bool = False,
                 seed: int = 0):
        from transformers import DataCollatorForLanguageModeling

        super().__init__(backbone)
        # The MLM model holds its own copy of the encoder (trained, then copied back in `trained_backbone`), so
        # the backbone is kept off the module tree: its weights are neither optimised nor checkpointed twice.
        del self._modules["backbone"]
        self.__dict__["backbone"] = backbone
        if backbone.tokenizer.mask_token is None:
            raise BackboneError(f"the tokenizer of {backbone.source} has no mask token, so it cannot do MLM: use a "
                                "BERT-like encoder such as minilm")
        self.mlm, head = _mlm_model(backbone)
        # Whole-word masking in transformers replaces chosen words by [MASK] only (no random-token 10%).
        self.collator = DataCollatorForLanguageModeling(backbone.tokenizer, mlm_probability=mlm_probability,
                                                        whole_word_mask=whole_word, seed=seed,
                                                        mask_replace_prob=1.0 if whole_word else 0.8,
                                                        random_replace_prob=0.0 if whole_word else 0.1)
        self.options = {"mlm_probability": mlm_probability, "whole_word_mask": whole_word, "mlm_head": head,
                        "max_length": backbone.max_length}
        log.info("MLM head: %s", head)

    def dataset(self, data: UnlabeledData) -> torch.utils.data.Dataset:
        tok = self.backbone.tokenizer
        whole_word = self.options["whole_word_mask"]
        encoded = tok(list(data.items), truncation=True, max_length=self.backbone.max_length,
                      return_attention_mask=False, return_offsets_mapping=whole_word)
        return _Encoded({k: encoded[k] for k in (("input_ids", "offset_mapping") if whole_word else ("input_ids",))})

    def collate(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "offset_mapping" in batch[0]:
            # tokenizer.pad pads token ids but not offsets; pad those by hand ((0, 0) = a special token) to the
            # same length on the tokenizer's padding side so that the collator can stack them.
            longest = max(len(b["input_ids"]) for b in batch)
            left = self.backbone.tokenizer.padding_side == "left"
            batch = [{**b, "offset_mapping": ([(0, 0)] * (longest - len(b["offset_mapping"])) if left else [])
                      + [tuple(o) for o in b["offset_mapping"]]
                      + ([] if left else [(0, 0)] * (longest - len(b["offset_mapping"])))} for b in batch]
        return dict(self.collator(batch))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlm(**batch).loss

    def batch_size_of(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["input_ids"])

    def trained_backbone(self) -> HFTextBackbone:
        """Copy the trained encoder back into the backbone (which keeps its pooler, unused by mean pooling)."""
        base = getattr(self.mlm, self.mlm.base_model_prefix)
        missing, unexpected = self.backbone.model.load_state_dict(base.state_dict(), strict=False)
        if unexpected or any("pooler" not in k for k in missing):
            raise BackboneError(f"cannot copy the trained encoder back (missing {missing[:3]}, unexpected "
                                f"{unexpected[:3]})")
        return self.backbone
