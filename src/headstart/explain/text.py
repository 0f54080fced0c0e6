"""Integrated Gradients (Sundararajan et al. 2017) for text models, with captum's LayerIntegratedGradients over
the input embeddings the backbone family names (`explain_layer`). The baseline keeps the special tokens and
replaces every other token by padding; a token's attribution is the sum over its embedding dimensions."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._util import atomic_write_bytes
from .base import Explainer, Explanation, register_explainer

IG_STEPS = 32


@register_explainer
class IntegratedGradientsExplainer(Explainer):
    modality = "text"
    name = "integrated-gradients"
    method = "Integrated Gradients over the input embeddings (Sundararajan et al. 2017, captum)"
    file_suffix = ".tokens.html"

    def file_stem(self, item) -> str:
        return "text"

    def _forward(self, names: list[str]):
        def forward(input_ids: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
            return self.net({"input_ids": input_ids, **dict(zip(names, rest))}).float()
        return forward

    def _ordinary(self, ids: torch.Tensor) -> np.ndarray:
        """Positions of the tokens that are not special ([CLS], [SEP], padding)."""
        special = set(self.model.backbone.tokenizer.all_special_ids)
        return np.array([i for i, t in enumerate(ids[0].tolist()) if t not in special], dtype=int)

    def explain(self, items: Sequence) -> list[Explanation]:
        from captum.attr import LayerIntegratedGradients

        tokenizer = self.model.backbone.tokenizer
        out = []
        for text in items:
            batch = self.model.backbone.collate([text])
            names = [k for k in batch if k != "input_ids"]
            ids, rest = batch["input_ids"], tuple(batch[k] for k in names)
            probs = self.probabilities(batch)[0]
            target = int(probs.argmax())
            keep = self._ordinary(ids)
            baseline = ids.clone()
            baseline[0, keep] = tokenizer.pad_token_id or 0
            ig = LayerIntegratedGradients(self._forward(names), self.layer)
            attr = ig.attribute(ids, baselines=baseline, additional_forward_args=rest, target=target,
                                n_steps=IG_STEPS, internal_batch_size=IG_STEPS)
            per_token = attr.sum(-1)[0].detach().numpy()[keep]
            tokens = tokenizer.convert_ids_to_tokens(ids[0, keep].tolist())
            out.append(Explanation(text, self.model.classes[target], target, float(probs[target]),
                                   per_token.astype(np.float32), inputs=(batch, keep), units=tokens))
        return out

    def probability_without(self, explanation: Explanation, units: np.ndarray) -> float:
        """Deleted tokens are removed from the sequence (special tokens stay)."""
        batch, keep = explanation.inputs
        drop = set(keep[units].tolist())
        positions = [i for i in range(batch["input_ids"].shape[1]) if i not in drop]
        return float(self.probabilities({k: v[:, positions] for k, v in batch.items()})[0, explanation.label_index])

    def save(self, explanation: Explanation, file: Path) -> Path:
        """An HTML snippet: the label, a legend, the coloured tokens. Non-ASCII characters are written as
        character references, so that the snippet reads right opened alone, with no charset declared."""
        atomic_write_bytes(file, token_html(explanation).encode("ascii", "xmlcharrefreplace"))
        return file


FOR_COLOUR, AGAINST_COLOUR = "220,50,47", "38,139,210"  # red, blue (RGB)


def _swatch(colour: str, text: str) -> str:
    return f'<span style="background:rgba({colour},0.8);border-radius:3px;padding:0 4px">{text}</span>'


def token_html(explanation: Explanation) -> str:
    """The tokens as coloured spans: red for evidence for the predicted label, blue against, opacity by size;
    a legend above them says so, for a reader who has only this snippet."""
    a = explanation.attributions
    scale = float(np.abs(a).max()) or 1.0
    spans = []
    for token, value in zip(explanation.units, a):
        colour = FOR_COLOUR if value > 0 else AGAINST_COLOUR
        glue = token.startswith("##")
        text = html.escape(token[2:] if glue else token)
        spans.append(("" if glue or not spans else " ") + f'<span title="{value:+.3f}" style="background:rgba('
                     f'{colour},{abs(value) / scale:.2f});border-radius:3px;padding:0 1px">{text}</span>')
    label = html.escape(explanation.label)
    legend = (f'<div class="legend" style="font-size:smaller">{_swatch(FOR_COLOUR, "red")}: pushes towards '
              f'<b>{label}</b>; {_swatch(AGAINST_COLOUR, "blue")}: pushes against it (towards other classes); '
              "the stronger the colour, the larger the push (Integrated Gradients; hover over a token for its "
              "value).</div>")
    return (f'<div class="token-attributions"><div>predicted <b>{label}</b> ({explanation.score:.2f})</div>'
            f"{legend}<p>{''.join(spans)}</p></div>\n")
