"""Command-line options generated from the Python API's option dataclasses, and run config files.

`fit`, `pretrain` and `distill` offer, besides a few options of their own, one option per field of the API's
option objects (options.py) and of every registered strategy or pretraining objective, with the help their
fields carry (`settings.setting`). The options are made when the command runs or shows its help, not when the CLI is
imported: `headstart --help` stays light, and a strategy registered later (a plug-in module) is offered as well.

`--config FILE` reads a YAML file of the same options (keys spelt as the options, `-` or `_`); the command line
overrides it, and an unknown key is a one-line error naming it and the file. `write_run_config` writes every
option's value into the run folder (RUN/config.yaml), so that `--config RUN/config.yaml` repeats the run.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

CONFIG_FILE = "config.yaml"
CONFIG_HELP = ("Read the options from a YAML file (keys as the options are spelt, e.g. `epochs: 3`), such as a "
               "run's own RUN/config.yaml; options given on the command line override it.")
NOT_RECORDED = ("config", "processes")  # how a command is launched, not what it computes
_GENERATED = "headstart.generated"  # the ctx.meta key of the generated options' values


@dataclass(frozen=True)
class FieldGroup:
    """The fields of one or more dataclasses offered as options: `key` names the group (an option object of the
    API, or "settings" for a strategy's or objective's own), `panel` the heading in --help, `defaults` whether
    an option's default is its field's (an option object) or None, "not given" (plug-in settings, whose
    defaults differ from one plug-in to the next)."""

    key: str
    classes: tuple[type, ...]
    panel: str
    defaults: bool = True
    only: tuple[str, ...] | None = None  # the fields that apply to this command (None: all)


@dataclass(frozen=True)
class Generated:
    """One generated option: its parameter name, the group and field it fills, and how its text is read."""

    name: str
    group: str
    field: str
    parse: Callable[[Any], Any] | None


def _kind(annotation: Any) -> type:
    """The command-line type of a field from its annotation (a string under `from __future__ import annotations`):
    the first of bool, int, float named, else text."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    first = next((t.strip() for t in text.split("|") if t.strip() != "None"), "str")
    return {"bool": bool, "int": int, "float": float}.get(first, str)


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or field.name.replace("_", "-")


def _option_parameter(group: FieldGroup, field: dataclasses.Field, owners: list[str]) -> inspect.Parameter:
    """A Typer option parameter for `field`, as a synthetic function parameter (Typer builds the option)."""
    flag, kind = _flag(field), _kind(field.type)
    parse = field.metadata.get("parse")
    default = field.default if group.defaults and field.default is not dataclasses.MISSING else None
    if parse is not None:
        kind, default = str, (None if default is None else str(default))
    help_text = field.metadata.get("help", "")
    if not group.defaults and not help_text.startswith(f"{owners[0]}:"):
        help_text = f"{help_text} ({', '.join(owners)})".strip()
    decls = [f"--{flag}/--no-{flag}"] if kind is bool else [f"--{flag}"]
    option = typer.Option(default, *decls, help=help_text, show_default=group.defaults and default is not None,
                          rich_help_panel=group.panel)
    name = flag.replace("-", "_")
    name = field.name if keyword.iskeyword(name) else name  # --from: from_weights
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=kind if default is not None else kind | None)


def _fields(group: FieldGroup) -> Iterable[tuple[dataclasses.Field, list[str]]]:
    """Each field of the group's classes once (the first class that has it), with the names of the classes
    (plug-ins) that have it; fields a command line cannot fill are left out."""
    seen: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for cls in group.classes:
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli", True) and f.init and (group.only is None or f.name in group.only):
                seen.setdefault(f.name, (f, []))[1].append(getattr(cls, "name", cls.__name__))
    return seen.values()


def generate(groups: list[FieldGroup], taken: set[str]) -> tuple[list[Any], dict[str, Generated]]:
    """The click parameters for the groups' fields (names in `taken`, the command's own, are skipped) and what
    each fills."""
    parameters, generated = [], {}
    for group in groups:
        for field, owners in _fields(group):
            parameter = _option_parameter(group, field, owners)
            if parameter.name in taken or parameter.name in generated:
                continue
            parameters.append(parameter)
            generated[parameter.name] = Generated(parameter.name, group.key, field.name, field.metadata.get("parse"))

    def template(**values: Any) -> None:  # only its signature is read
        """Generated options."""

    template.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    template.__annotations__ = {p.name: p.annotation for p in parameters}
    app = typer.Typer()
    app.command()(template)
    app.command("unused")(lambda: None)  # two commands: get_command returns a group whose commands can be read
    command = typer.main.get_command(app).commands["template"]  # type: ignore[attr-defined]
    return list(command.params), generated


class GeneratedCommand(TyperCommand):
    """A Typer command with options generated from field groups (`groups`, a function: called when the command
    runs, so that later registrations count) and a `--config` file read before its options are parsed."""

    groups: Callable[[], list[FieldGroup]]

    def generated(self) -> tuple[list[Any], dict[str, Generated]]:
        groups = type(self).groups()
        key = tuple((g.key, g.classes) for g in groups)
        if getattr(self, "_generated_key", None) != key:
            own = {p.name for p in self.params}
            self._generated_cache = generate(groups, own)
            self._generated_key = key
        return self._generated_cache

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        return [*params[:-1], *self.generated()[0], params[-1]] if params else self.generated()[0]

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        config = _config_argument(args)
        if config is not None:
            names = {spelling: p.name for p in self.get_params(ctx) if p.name and p.name not in NOT_RECORDED
                     for spelling in (p.name, *(o.lstrip("-").replace("-", "_") for o in p.opts))}
            ctx.default_map = read_config(Path(config), names, ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        generated = self.generated()[1]
        ctx.meta[_GENERATED] = {"values": {name: ctx.params.pop(name) for name in generated if name in ctx.params},
                                "fields": generated}
        return super().invoke(ctx)


def generated_command(groups: Callable[[], list[FieldGroup]]) -> type[GeneratedCommand]:
    """A command class offering the options of `groups()`."""
    return type("GeneratedCommand", (GeneratedCommand,), {"groups": staticmethod(groups)})


def _config_argument(args: list[str]) -> str | None:
    for i, argument in enumerate(args):
        if argument == "--config" and i + 1 < len(args):
            return args[i + 1]
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
    return None


def _usage_error(message: str, ctx: Any) -> Exception:
    try:
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - Typer on the public click
        from click.exceptions import UsageError
    return UsageError(message, ctx)


def read_config(path: Path, names: dict[str, str], ctx: Any = None) -> dict[str, Any]:
    """The options a YAML config file sets, by parameter name (`names`: each accepted spelling's parameter); an
    unreadable file or an unknown key is a usage error naming it. A list (such as lora_targets) is given as the
    comma-separated text the option takes."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0]
        raise _usage_error(f"--config {path}: cannot read it ({reason})", ctx) from None
    if not isinstance(loaded, dict):
        raise _usage_error(f"--config {path}: expected option: value lines, got {type(loaded).__name__}", ctx)
    values = {}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise _usage_error(f"unknown option '{key}' in {path} (the options are those of --help)", ctx)
        values[names[name]] = ",".join(map(str, value)) if isinstance(value, list) else value
    return values


def _context() -> Any:
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - Typer on the public click
        from click import get_current_context
    return get_current_context()


def generated_values() -> dict[str, dict[str, Any]]:
    """The generated options' values of the running command, by group and field: option objects' fields as
    given or defaulted, plug-in settings only where given; text read by each field's `parse`."""
    found = _context().meta.get(_GENERATED, {"values": {}, "fields": {}})
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in found["values"].items():
        spec = found["fields"][name]
        if value is not None and spec.parse is not None:
            value = spec.parse(value)
        grouped.setdefault(spec.group, {})[spec.field] = value
    grouped["settings"] = {k: v for k, v in grouped.get("settings", {}).items() if v is not None}
    return grouped


def write_run_config(folder: Path, resolved: dict[str, Any], settings: dict[str, Any] | None = None) -> Path:
    """Write the running command's options (given, read from --config, or defaulted) to FOLDER/config.yaml,
    atomically, so that `--config FOLDER/config.yaml` repeats the run. Values decided during the run replace the
    options' own: `resolved`, by option name (the default run folder); `settings`, by field name (the settings
    the strategy or objective ran with: its defaults filled in; a name that is no option is left out)."""
    import yaml

    from ._util import atomic_write_bytes
    from .distributed import is_main

    path = Path(folder) / CONFIG_FILE
    if not is_main():  # under torchrun, rank 0 writes the run's files
        return path
    ctx = _context()
    found = ctx.meta.get(_GENERATED, {"values": {}, "fields": {}})
    values = {**ctx.params, **found["values"]}
    by_field = {spec.field: name for name, spec in found["fields"].items() if spec.group == "settings"}
    values.update({name: value for name, value in resolved.items() if name in values})
    values.update({by_field[field]: value for field, value in (settings or {}).items() if field in by_field})
    record = {name: _plain(value) for name, value in values.items() if name not in NOT_RECORDED}
    atomic_write_bytes(path, yaml.safe_dump(record, sort_keys=False, allow_unicode=True).encode())
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
