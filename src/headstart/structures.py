"""How loading rebuilds the network a strategy trained (LoRA's adapters, say) before the saved weights load, from
the strategy's name and settings in the manifest, without importing any training code.

The built-in strategies are known here by name. `register_strategy` makes a plug-in strategy known too (its
network unchanged: backbone and head); a plug-in that changes the network's structure also registers how to
rebuild it, with `@register_structure(name)`. A model saved by a strategy not known here is refused by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .adapters import inject_adapters
from .errors import SettingsError

if TYPE_CHECKING:
    from .heads import Classifier

Rebuild = Callable[["Classifier", dict[str, Any]], "Classifier"]
STRUCTURES: dict[str, Rebuild] = {}


def register_structure(*names: str) -> Callable[[Rebuild], Rebuild]:
    """Decorator: `rebuild(classifier, settings)` brings a freshly built classifier into the structure that the
    strategies `names` trained, given the settings they recorded."""
    def register(rebuild: Rebuild) -> Rebuild:
        for name in names:
            STRUCTURES[name] = rebuild
        return rebuild

    return register


@register_structure("probe", "prototypes", "finetune")
def unchanged(classifier: Classifier, settings: dict[str, Any]) -> Classifier:
    """The network as built: the backbone and the head."""
    return classifier


@register_structure("lora")
def with_adapters(classifier: Classifier, settings: dict[str, Any]) -> Classifier:
    """A saved unmerged LoRA model gets its adapters back before its weights load; a merged one is plain."""
    if not settings.get("merge"):
        inject_adapters(classifier.backbone, settings, settings.get("dropout", 0.0))
    classifier.eval()
    return classifier


register_structure("contrastive")(unchanged)


@register_structure("auto")
def as_chosen(classifier: Classifier, settings: dict[str, Any]) -> Classifier:
    """auto's model is the model of the strategy it chose (models saved before it recorded one: unchanged)."""
    if "chosen" not in settings:
        return classifier
    return rebuild_structure(classifier, settings["chosen"], settings.get("chosen_settings", {}))


def rebuild_structure(classifier: Classifier, strategy: str, settings: dict[str, Any]) -> Classifier:
    """`classifier` (backbone and head, freshly built) in the structure that `strategy` trained with `settings`."""
    if strategy not in STRUCTURES:
        close = difflib.get_close_matches(strategy, list(STRUCTURES), n=1, cutoff=0.75)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SettingsError(f"unknown strategy '{strategy}'{hint}: use one of {', '.join(STRUCTURES)} (a plug-in "
                            "strategy is known once the module that registers it is imported)")
    return STRUCTURES[strategy](classifier, settings)
