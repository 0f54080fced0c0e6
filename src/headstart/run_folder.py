"""The run folder (`fit --out RUN`): checked before any work, and never a place where headstart deletes or
overwrites files it did not write.

A run folder holds `headstart-run.json` (what kind of run, with which settings and data), `model/`,
`metrics.json`, `checkpoints/`, `logs/` and, from the command line, `config.yaml` (the command's options). A
folder with other files is refused unless the user says `--overwrite`, and even then only headstart's own entries
are replaced.

Under torchrun (several processes) the folder is rank 0's: the steps here that look at or write it run there
alone (`on_main`), and the other ranks wait for them and share their outcome.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ._util import atomic_symlink, atomic_write_json, stable_json
from .distributed import is_main, on_main
from .errors import HeadstartError

log = logging.getLogger("headstart")

RUN_RECORD = "headstart-run.json"
RUN_OPTIONS = "config.yaml"  # written by the command line (cli_options.write_run_config)
OWN_ENTRIES = {RUN_RECORD, "model", "metrics.json", "checkpoints", "logs", RUN_OPTIONS}
# Temporary names of headstart's own atomic writes (a kill can leave them): the model's new/old folders, the
# metrics link, the run record, the writability check.
OWN_TEMPORARY = re.compile(r"^\.(model\.(new|old)-|metrics\.json\..*\.link$|"
                           r"(headstart-run\.json|config\.yaml)\..*\.tmp$|headstart-write-check-)")


def _is_headstart_run(path: Path) -> bool:
    """Written by headstart: a run record, or (before run records) a saved model folder."""
    return (path / RUN_RECORD).is_file() or (path / "model" / "headstart.json").is_file()


def _foreign_entries(path: Path) -> list[str]:
    """Entries headstart did not write. In a folder that is not a headstart run, that is all of them."""
    own = OWN_ENTRIES if _is_headstart_run(path) else set()
    return sorted(p.name for p in path.iterdir() if p.name not in own and not OWN_TEMPORARY.match(p.name))


# What `fit` replaces or deletes below the top level, and how headstart's own is told from a user's: model/ is
# replaced as a whole (its own holds headstart.json); a fresh finetune deletes and rewrites these checkpoints.
MODEL_MARKER = "headstart.json"
REPLACED_CHECKPOINTS = ("last.ckpt", "best.ckpt")


def _foreign_inside(path: Path) -> list[str]:
    """Files below the top level that `fit` would delete or replace although headstart did not write them: a
    model/ without headstart.json, and checkpoints in a folder that is not a headstart run. (logs/ only grows:
    each run adds its own version_N folder.)"""
    found = []
    model = path / "model"
    if model.is_symlink() or (model.exists() and not model.is_dir()):
        found.append("model")
    elif model.is_dir() and not (model / MODEL_MARKER).is_file():
        found += [f"model/{p.name}" for p in sorted(model.iterdir())]
    if not _is_headstart_run(path):
        found += [f"checkpoints/{name}" for name in REPLACED_CHECKPOINTS if (path / "checkpoints" / name).exists()]
    return found


def _remove_dead_temporaries(path: Path) -> None:
    """Files a killed write left behind (the model's folders are recovered by `recover_directory`)."""
    for p in path.iterdir():
        if OWN_TEMPORARY.match(p.name) and not p.name.startswith(".model."):
            p.unlink(missing_ok=True)


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".headstart-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise HeadstartError(f"--out {path}: cannot write there ({e.strerror or type(e).__name__}): choose a folder "
                             "you can write to") from None


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((path / RUN_RECORD).read_text())
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(value: Any) -> str:
    text = stable_json(value)
    return text if len(text) <= 40 else text[:37] + "..."


@on_main
def check_run_folder(path: Path, *, overwrite: bool) -> None:
    """Before any work: `path` must be a writable folder that is new, empty, or a headstart run."""
    if path.exists() and not path.is_dir():
        raise HeadstartError(f"--out {path} is a file: give a folder path for the run")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        foreign = _foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise HeadstartError(f"--out {path} holds files headstart did not write ({shown}): give a new folder, "
                                 "or add --overwrite to write beside them (only model/, metrics.json, "
                                 f"checkpoints/, logs/, {RUN_OPTIONS} and {RUN_RECORD} are written)")
    if path.is_dir():
        inside = _foreign_inside(path)
        if inside:  # even with --overwrite: it promises to replace headstart's own files only
            shown = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "")
            raise HeadstartError(f"--out {path} holds files headstart did not write where a run writes ({shown}); "
                                 "a run would replace them, so nothing was started: move them, or give a new folder")
    _check_writable(path)
    _remove_dead_temporaries(path)


@on_main
def record_run(path: Path, kind: str, config: dict[str, Any], *, resume: bool, checkpoint: Path | None = None) -> None:
    """Write the run's record; with `resume`, the folder's run must have the same `config` (data, settings).
    `checkpoint` (pretrain's): the file a resumed run continues from, which must then exist, and which a fresh
    run removes."""
    if checkpoint is not None and not resume and checkpoint.is_file():
        log.info("starting afresh: the checkpoint in %s is replaced (use --resume to continue it)", path)
        checkpoint.unlink()
    if resume and checkpoint is not None and not checkpoint.is_file():
        raise HeadstartError(f"--resume: no checkpoint at {checkpoint}; run without --resume to start afresh "
                             "(or give the same --out as the interrupted run)")
    if resume:
        record = _read_record(path)
        if record is None:
            raise HeadstartError(f"--resume: {path} holds no headstart run to continue ({RUN_RECORD} is missing): "
                                 "run without --resume to start afresh")
        before, now = _flatten(record.get("config", {})), _flatten(config)
        changed = [k for k in sorted(set(before) | set(now)) if stable_json(before.get(k)) != stable_json(now.get(k))]
        if changed:
            shown = "; ".join(f"{k}: {_short(before.get(k))} -> {_short(now.get(k))}" for k in changed[:3])
            raise HeadstartError(f"--resume: the data or settings differ from the run in {path} ({shown}): use the "
                                 "same data and settings as the interrupted run (only --epochs may grow), or start "
                                 "afresh without --resume")
    atomic_write_json(path / RUN_RECORD, {"kind": kind, "config": config})


F = TypeVar("F", bound=Callable[..., Any])
# What makes a failed run's folder worth keeping: checkpoints `--resume` continues from, a saved model.
WORTH_KEEPING = ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "model")


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` (itself included) that does not exist yet: what creating it would create."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def remove_failed_run_folder(path: Path, created: Path) -> bool:
    """After a failed run: remove `path` and its parents up to `created` (the outermost folder this run made),
    when they hold nothing but headstart's own entries and nothing a `--resume` could continue from. Anything
    else there (a file the user put in meanwhile, a checkpoint) keeps the folder. Returns whether it was removed."""
    if not path.is_dir() or not (path == created or created in path.parents):
        return False
    if _foreign_entries(path) or any((path / name).exists() for name in WORTH_KEEPING):
        return False
    shutil.rmtree(path)
    for folder in path.parents:
        if folder != created and created not in folder.parents:
            break
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break
    return True


def discard_failed_run_folder(fit: F) -> F:
    """Decorator for a function with an `out=` run folder: if it fails, a run folder it created (with any parent
    folders) is removed again when only headstart's files are in it (a run record, empty logs) and nothing to
    resume; a folder that existed before, or one with other files or a checkpoint, is left as it is."""

    @functools.wraps(fit)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        path = Path(out).expanduser().absolute() if out is not None else None
        created = _first_missing(path) if path is not None else None
        try:
            return fit(*args, **kwargs)
        except BaseException:
            if path is not None and created is not None and is_main():  # rank 0 made it, rank 0 removes it
                try:
                    remove_failed_run_folder(path, created)
                except OSError:
                    pass  # the failure itself is what the user must see
            raise

    return wrapper  # type: ignore[return-value]


@on_main
def link_metrics(path: Path, metrics_file: str) -> None:
    """RUN/metrics.json as a link to the saved model's metrics (model/`metrics_file`), so that it always follows
    RUN/model."""
    atomic_symlink(path / metrics_file, f"model/{metrics_file}")
