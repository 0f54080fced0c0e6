"""`pretrain`: self-supervised training of a backbone on unlabeled data, saved as a backbone folder.

Under torchrun every rank trains (Lightning DDP, trainer.py) and rank 0 alone writes the run's settings, the
backbone folder and its loss curve."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from .._util import atomic_write_json, stable_json
from ..backbones.folder import BACKBONE_MANIFEST, save_backbone_dir
from ..data.unlabeled import UnlabeledData, read_unlabeled
from ..data.unreadable import without_unreadable
from ..errors import BackboneError, DataError, HeadstartError
from ..modalities import ensure_same_modality, get_modality
from ..settings import PRECISIONS
from ..training import check_logger, restarted_with_checkpoint
from . import audio_contrastive, audio_masked, autoencoder, contrastive, masked, mlm  # noqa: F401  (registration)
from .base import ObjectiveOptions, find_objective, objective_names, objectives_by_modality
from .trainer import downsample_curve, plot_loss_curve, train

log = logging.getLogger("headstart")

RUN_CONFIG = "pretrain-config.json"
LOSS_PLOT = "loss_curve.png"

@dataclass
class Pretrained:
    """What `pretrain` returns: the backbone folder and its manifest (objective, data, steps, loss curve)."""

    path: Path
    manifest: dict[str, Any]

    @property
    def pretraining(self) -> dict[str, Any]:
        """The manifest's record of the run: objective, data fingerprint, steps and the loss curve."""
        return self.manifest["pretraining"]

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def _check_positive(**values: float | int | None) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            flag = "--" + name.replace("_", "-")
            raise HeadstartError(f"{flag} must be positive, got {value}")


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an earlier backbone folder: `--out` is rewritten as a whole."""
    if out.is_file():
        raise HeadstartError(f"--out {out} is a file: give a folder path for the pretrained backbone")
    if out.is_dir() and any(out.iterdir()) and not (out / BACKBONE_MANIFEST).is_file():
        raise HeadstartError(f"--out {out} is a non-empty folder that is not a headstart backbone, and would be "
                             "replaced: give a new folder path")


def pretrain(
    data: str | Path | UnlabeledData,
    objective: str = "contrastive",
    backbone: str = "smallcnn",
    *,
    out: str | Path,
    from_weights: str | None = None,
    epochs: int | None = None,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    image_size: int | None = None,
    max_length: int | None = None,
    denoise: bool = False,
    mask_ratio: float = 0.5,
    temperature: float = 0.5,
    whole_word: bool = False,
    text_column: str | None = None,
    precision: str = "auto",
    seed: int = 0,
    resume: bool = False,
    strict: bool = False,
    run_dir: str | Path | None = None,
    logger: str = "csv",
) -> Pretrained:
    """Train `backbone` on unlabeled `data` with a self-supervised `objective`; save it to `out`.

    Images: objective autoencoder (`denoise=True` for the denoising variant), masked or contrastive; the
    encoder starts from random weights, or from `from_weights` ('pretrained' for the backbone's published
    weights, a timm weights file, or a folder from an earlier `pretrain`). Text: objective mlm on a Transformers
    encoder (e.g. 'minilm'), continuing from its pre-trained weights. Training stops at the first of `epochs`,
    `max_steps` and `max_minutes`; checkpoints go to `run_dir` (default OUT.run/) and `resume=True` continues
    (or extends, with a larger budget) the run found there; the loss curve is logged there too, as `logger` says
    (csv, tensorboard or mlflow). Returns the folder and its manifest.
    """
    if objective not in objective_names():
        raise HeadstartError(f"unknown objective '{objective}': use one of {', '.join(objective_names())}")
    if precision not in PRECISIONS:
        raise HeadstartError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    check_logger(logger)
    _check_positive(epochs=epochs, max_minutes=max_minutes, max_steps=max_steps, batch_size=batch_size, lr=lr,
                    image_size=image_size, max_length=max_length, temperature=temperature)
    if not 0 < mask_ratio < 1:
        raise HeadstartError(f"--mask-ratio must be between 0 and 1, got {mask_ratio}")
    out = Path(out).expanduser()
    _check_out(out)
    run_dir = Path(run_dir).expanduser() if run_dir is not None else out.with_name(out.name + ".run")
    started = time.perf_counter()

    unlabeled = data if isinstance(data, UnlabeledData) else read_unlabeled(data, text_column)
    kind = find_objective(objective, unlabeled.modality)
    fitting = objectives_by_modality().get(unlabeled.modality, [])
    ensure_same_modality(kind.modality, unlabeled.modality, f"objective '{objective}'", f"{unlabeled.source} holds",
                         f"use --objective {', '.join(fitting)}" if fitting else "no objective pretrains on it yet",
                         HeadstartError)
    readable = without_unreadable(unlabeled, strict)
    unlabeled, n_skipped = readable, len(unlabeled) - len(readable)
    if len(unlabeled) < 2:
        raise DataError(f"{unlabeled.source} has {len(unlabeled)} usable item(s): pretraining needs at least 2 "
                        "(and thousands to be worth it)")

    ranks = distributed.world_size()
    if len(unlabeled) < ranks:
        raise DataError(f"{unlabeled.source} has {len(unlabeled)} usable item(s), fewer than the {ranks} processes "
                        "that would share them: run fewer processes")
    torch.manual_seed(seed)
    # The seed of an objective's own mask draws (mlm's): each rank its own, rank 0 the one-process seed.
    options = ObjectiveOptions(denoise=denoise, mask_ratio=mask_ratio, temperature=temperature, whole_word=whole_word,
                               seed=distributed.own_seed(seed), image_size=image_size, max_length=max_length)
    net, base_weights = kind.starting_backbone(backbone, from_weights, options)
    ensure_same_modality(net.modality, kind.modality, f"backbone '{backbone}'", f"objective '{objective}' trains on",
                         f"use --backbone {get_modality(kind.modality).suggested_backbone} or another "
                         f"{kind.modality} encoder", BackboneError)
    fingerprint = unlabeled.fingerprint()
    grayscale = unlabeled.is_grayscale()

    obj = kind.create(net, unlabeled, options)
    if kind.decode_in_workers:
        net.to(memory_format=torch.channels_last)
    batch = min(batch_size or kind.default_batch_size, len(unlabeled) // ranks)  # per process
    epochs = epochs or (10_000 if (max_minutes or max_steps) else kind.default_epochs)
    # batch_size: the global batch, which the training follows (a run of 2 processes with batch B continues as one
    # with 2B), and which is the batch of one process.
    config = {"objective": objective, "objective_options": obj.options, "backbone": backbone,
              "base_weights": base_weights, "data_fingerprint": fingerprint, "batch_size": batch * ranks, "seed": seed}
    # After torchrun restarts a run whose process died (--max-restarts), it continues from its last checkpoint.
    resume = resume or restarted_with_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    distributed.on_main(_check_run_dir)(run_dir, config, resume)
    log.info("pretraining %s (%s) on %d %s items of %s; batch %d%s; base weights: %s", backbone, objective,
             len(unlabeled), unlabeled.modality, unlabeled.name, batch, f" x {ranks} processes" if ranks > 1 else "",
             base_weights)

    result = train(obj, obj.dataset(unlabeled), run_dir, batch_size=batch, lr=lr or kind.default_lr, epochs=epochs,
                   max_steps=max_steps, max_minutes=max_minutes, precision=precision, seed=seed, resume=resume,
                   logger=logger)
    trained = obj.trained_backbone()
    trained.is_pretrained = True
    losses = result.pop("losses")
    curve = downsample_curve(losses)
    head = max(1, len(losses) // 20)
    pretraining = {
            "objective": objective, "paper": obj.paper, "options": obj.options, "backbone_name": backbone,
            "base_weights": base_weights,
            "data": {"source": unlabeled.source, "name": unlabeled.name, "modality": unlabeled.modality,
                     "items": len(unlabeled), "skipped_unreadable": n_skipped, "fingerprint": fingerprint,
                     "grayscale": grayscale},
            "batch_size": batch, "lr": lr or kind.default_lr, "seed": seed, "max_minutes": max_minutes,
            "max_steps": max_steps, "epochs_planned": epochs, **result, "processes": ranks,
            "samples_seen": result["steps"] * batch * ranks,
            "first_loss": float(np.mean([v for _, v in losses[:head]])) if losses else None,
            "final_loss": float(np.mean([v for _, v in losses[-head:]])) if losses else None,
            "loss_curve": curve, "loss_plot": LOSS_PLOT, "run_dir": str(run_dir),
            "total_seconds": round(time.perf_counter() - started, 1),
    }
    title = f"{objective} pretraining of {backbone} on {unlabeled.name} ({len(unlabeled)} items)"

    @distributed.on_main
    def save() -> dict[str, Any]:
        manifest = save_backbone_dir(trained, out, pretraining, extra_files={LOSS_PLOT: plot_loss_curve(curve, title)})
        return manifest.model_dump(mode="json")

    return Pretrained(out, distributed.broadcast_object(save()))  # rank 0 wrote it; every rank returns its manifest


def _check_run_dir(run_dir: Path, config: dict[str, Any], resume: bool) -> None:
    """Record the run's settings; `resume` must find a checkpoint made with the same ones."""
    file = run_dir / RUN_CONFIG
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise HeadstartError(f"--resume: no checkpoint at {last}; run without --resume to start afresh "
                                 "(or give the same --out as the interrupted run)")
        if file.is_file():
            before = json.loads(file.read_text())
            changed = [k for k in config if stable_json(before.get(k)) != stable_json(config[k])]
            if changed:
                raise HeadstartError(f"--resume: {', '.join(changed)} differ(s) from the run in {run_dir} "
                                     f"(was {', '.join(str(before.get(k)) for k in changed)}): use the same "
                                     "settings, or start afresh without --resume")
    elif last.is_file():
        log.info("starting afresh: the checkpoint in %s is replaced (use --resume to continue it)", run_dir)
        last.unlink()
    atomic_write_json(file, config)
