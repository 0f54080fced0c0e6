"""Layer groups of Hugging Face Transformers models, shared by the text and audio families."""

from __future__ import annotations

from torch import nn


def transformer_layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Embeddings (or a convolutional feature encoder), then each transformer layer, then whatever remains
    (pooler, final norms): the input-to-output order discriminative learning rates need."""
    layers = next((m for name, m in model.named_modules()
                   if isinstance(m, nn.ModuleList) and name.endswith(("layer", "layers"))), None)
    if layers is None:
        return [list(model.parameters())]
    seen: set[int] = set()
    groups = []
    for layer in layers:
        groups.append(list(layer.parameters()))
        seen.update(id(p) for p in groups[-1])
    emb_module = next((m for n, m in model.named_children() if "embed" in n or "feature" in n), None)
    first = [p for p in emb_module.parameters() if id(p) not in seen] if emb_module is not None else []
    seen.update(id(p) for p in first)
    rest = [p for p in model.parameters() if id(p) not in seen]
    return ([first] if first else []) + groups + ([rest] if rest else [])
