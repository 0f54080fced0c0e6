"""Checking settings a user gives (ranges, choices) with one-line errors that name the setting, its command-line
flag, what was expected and what was given; and the precisions every command accepts.

On the ground floor, beside the errors, so that every command (fit, select, audit, pretrain) and every strategy
checks its options the same way without importing training code."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import SettingsError

PRECISIONS = ("auto", "fp32", "bf16")  # what --precision accepts; auto: bfloat16 where the device is fast at it


def option(name: str) -> str:
    """How a setting is named to a user: the Python name and its command-line flag."""
    return f"{name} (--{name.replace('_', '-')})"


def check_range(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                integer: bool = False, low_open: bool = False, high_open: bool = False) -> None:
    """Raise a SettingsError naming the setting and its range unless `value` lies in it (None is always allowed)."""
    if value is None:
        return
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        limits = " and ".join(x for x in (lo, hi) if x)
        raise SettingsError(f"{option(name)} must be {kind}{' ' + limits if limits else ''}, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise a SettingsError naming the setting and its choices unless `value` is one of them."""
    if value not in choices:
        raise SettingsError(f"{option(name)} must be one of {', '.join(choices)}, got {value!r}")


def setting(default: Any = None, help: str = "", *, flag: str | None = None, cli: bool = True,
            parse: Any = None) -> Any:
    """A dataclass field that carries what a command line needs to offer it (cli_options builds the options of
    `fit`, `pretrain` and `distill` from these): `help`, its `flag` when that is not the field's name with dashes,
    `parse` (a function of the text given on the command line or in a config file) and `cli=False` for a field
    only Python can fill (an in-memory object)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "cli": cli, "parse": parse})
