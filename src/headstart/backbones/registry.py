"""The backbone registry: families and names join it with decorators, timm-style; nothing else lists them.

- `@register_family("timm")` on a Backbone class: the `family` its `spec` names, so a saved model rebuilds it.
- `@register_backbone("efficientnet_lite0", modality=..., description=..., available=...)` on a builder
  function: a name users type. A name ending in ':' (e.g. "timm:") is a prefix; the builder gets the rest.
  One name may be registered once per modality ("smallcnn" for images and for audio, "hf:" for text and
  audio encoders): the data's modality picks the entry.
- `register_folder_kind(...)`: a kind of local folder that `--backbone PATH` accepts.

`headstart backbones` and the "unknown backbone" message are generated from these entries.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._util import recover_directory
from ..errors import BackboneError
from .base import Backbone


@dataclass(frozen=True)
class BackboneOptions:
    """What a user may set when building a backbone by name; each family uses what applies to it."""

    weights: str | None = None
    pretrained: bool = True
    image_size: int | None = None
    max_length: int | None = None


Builder = Callable[[str, BackboneOptions], Backbone]  # (rest of the name after a prefix, or "", options)


@dataclass(frozen=True)
class BackboneInfo:
    """One row of `headstart backbones`."""

    name: str
    modality: str
    description: str
    offline: bool
    where: str


@dataclass(frozen=True)
class NamedBackbone:
    name: str
    modality: str
    description: str
    build: Builder
    available: Callable[[], tuple[bool, str]]  # (works with no network, where the weights come from)

    @property
    def is_prefix(self) -> bool:
        return self.name.endswith(":")

    def display_name(self) -> str:
        return f"{self.name}<name>" if self.is_prefix else self.name

    def info(self) -> BackboneInfo:
        offline, where = self.available()
        return BackboneInfo(self.display_name(), self.modality, self.description, offline, where)


@dataclass(frozen=True)
class FolderKind:
    detect: Callable[[Path], bool]
    load: Callable[[Path, BackboneOptions], Backbone]
    describe: Callable[[Path], BackboneInfo]
    fallback: bool = False


FAMILIES: dict[str, type[Backbone]] = {}
NAMES: dict[tuple[str, str], NamedBackbone] = {}  # (name, modality)
FOLDER_KINDS: list[FolderKind] = []
B = TypeVar("B", bound=type[Backbone])


def register_family(family: str) -> Callable[[B], B]:
    """Class decorator: `spec["family"] == family` is rebuilt with this class's `from_spec`."""

    def decorate(cls: B) -> B:
        FAMILIES[family] = cls
        return cls

    return decorate


def _always() -> tuple[bool, str]:
    return True, "built in"


def register_backbone(name: str, *, modality: str, description: str,
                      available: Callable[[], tuple[bool, str]] = _always) -> Callable[[Builder], Builder]:
    """Function decorator: `name` (or every name starting with `name` when it ends in ':') builds with it."""

    def decorate(build: Builder) -> Builder:
        NAMES[(name, modality)] = NamedBackbone(name, modality, description, build, available)
        return build

    return decorate


def register_folder_kind(detect: Callable[[Path], bool], load: Callable[[Path, BackboneOptions], Backbone],
                         describe: Callable[[Path], BackboneInfo], fallback: bool = False) -> None:
    """A kind of local folder that `--backbone PATH` accepts, checked in registration order; a `fallback` kind
    (one that accepts broadly, such as any folder with a config.json) only after all the others."""
    kind = FolderKind(detect, load, describe, fallback)
    FOLDER_KINDS.insert(len(FOLDER_KINDS) if fallback else sum(not k.fallback for k in FOLDER_KINDS), kind)


def _folder_kind(path: Path) -> FolderKind:
    kind = next((k for k in FOLDER_KINDS if k.detect(path)), None)
    if kind is None:
        raise BackboneError(f"{path} is not a backbone folder headstart knows (a folder written by `headstart "
                            "pretrain`, or a Hugging Face model folder with config.json)")
    return kind


def _known_names() -> str:
    return ", ".join([*list(dict.fromkeys(e.display_name() for e in NAMES.values())), "a local folder"])


def _did_you_mean(name: str) -> str:
    """" (did you mean 'minilm'?)" for a near miss of a registered name (of a prefix: 'timm:<name>'), else ""."""
    shown = {e.name: e.display_name() for e in NAMES.values()}
    close = difflib.get_close_matches(name, list(shown), n=1, cutoff=0.75)
    return f" (did you mean '{shown[close[0]]}'?)" if close else ""


def _entry(name: str, modality: str | None) -> tuple[NamedBackbone, str] | None:
    """The registered entry `name` refers to and the rest of the name after a prefix; among entries of several
    modalities, the one of `modality` (else the first registered)."""
    matches = [(e, "") for e in NAMES.values() if not e.is_prefix and e.name == name]
    matches = matches or [(e, name[len(e.name):]) for e in NAMES.values() if e.is_prefix and name.startswith(e.name)]
    if not matches:
        return None
    by_modality = {entry.modality: (entry, rest) for entry, rest in reversed(matches)}
    return by_modality.get(modality, matches[0])


def resolve_backbone(name: str, weights: str | None = None, pretrained: bool = True,
                     image_size: int | None = None, max_length: int | None = None,
                     modality: str | None = None) -> Backbone:
    """Build the backbone a name refers to, with its pre-trained weights. `modality`: the data's, which picks
    among entries of the same name for several modalities (`smallcnn` for images or audio)."""
    options = BackboneOptions(weights, pretrained, image_size, max_length)
    found = _entry(name, modality)
    if found is not None:
        entry, rest = found
        return entry.build(rest, options)
    path = Path(name).expanduser()
    recover_directory(path)  # a `pretrain` save killed between its two renames
    if path.is_dir():
        return _folder_kind(path).load(path, options)
    raise BackboneError(f"unknown backbone '{name}'{_did_you_mean(name)}: use one of {_known_names()} "
                        "(see `headstart backbones`)")


def list_backbones(folders: Sequence[str | Path] = ()) -> list[BackboneInfo]:
    """The registered names and whether each works with no network; then any local backbone `folders` given."""
    rows = [entry.info() for entry in NAMES.values()]
    for folder in folders:
        path = Path(folder).expanduser()
        recover_directory(path)
        rows.append(_folder_kind(path).describe(path))
    return rows


def backbone_from_spec(spec: dict[str, Any], model_dir: Path) -> Backbone:
    """Rebuild a saved backbone's architecture from its manifest entry, with no network."""
    family = FAMILIES.get(spec.get("family", "")) if isinstance(spec, dict) else None
    if family is None:
        known = ", ".join(FAMILIES)
        raise BackboneError(f"{model_dir}: unknown backbone family {spec.get('family') if isinstance(spec, dict) else spec!r} "
                            f"in the manifest (known: {known}); was it saved by a newer headstart or with a plug-in?")
    return family.from_spec(spec, model_dir)
