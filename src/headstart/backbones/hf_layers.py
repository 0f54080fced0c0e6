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


def transformer_linear_names(model: nn.Module) -> list[str]:
    """The linear layers of one transformer layer, named relative to it ("attention.self.query", ...,
    "output.dense"): as module-name suffixes they select those layers in every transformer layer and nothing
    outside them (a pooler's "pooler.dense" does not end in ".output.dense"). LoRA adapts all of them: QLoRA
    (Dettmers et al. 2023) found adapting every linear layer, not only the attention's, needed to match full
    fine-tuning."""
    layers = next((m for name, m in model.named_modules()
                   if isinstance(m, nn.ModuleList) and name.endswith(("layer", "layers"))), None)
    if layers is None or len(layers) == 0:
        return ["query", "value"]
    return [name for name, m in layers[0].named_modules() if isinstance(m, nn.Linear)]
