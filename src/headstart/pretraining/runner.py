"""`pretrain`: self-supervised training of a backbone on unlabeled data, saved as a backbone folder.

Under torchrun every rank trains (Lightning DDP, trainer.py) and rank 0 alone writes the run's settings, the
backbone folder and its loss curve."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..backbones.folder import BACKBONE_MANIFEST, save_backbone_dir
from ..data.unlabeled import UnlabeledData, read_unlabeled
from ..data.unreadable import without_unreadable
from ..errors import BackboneError, DataError, HeadstartError
from ..modalities import ensure_same_modality, get_modality
from ..options import BackboneOptions, DataOptions, RunOptions, backbone_options, sorted_into
from ..run_folder import check_run_folder, record_run
from ..training import restarted_with_checkpoint
from . import audio_contrastive, audio_masked, autoencoder, contrastive, masked, mlm  # noqa: F401  (registration)
from .base import ObjectiveOptions, PretrainOptions, find_objective, objective_names, objectives_by_modality
from .trainer import downsample_curve, plot_loss_curve, train

log = logging.getLogger("headstart")

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


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an earlier backbone folder: `--out` is rewritten as a whole."""
    if out.is_file():
        raise HeadstartError(f"--out {out} is a file: give a folder path for the pretrained backbone")
    if out.is_dir() and any(out.iterdir()) and not (out / BACKBONE_MANIFEST).is_file():
        raise HeadstartError(f"--out {out} is a non-empty folder that is not a headstart backbone, and would be "
                             "replaced: give a new folder path")


@dataclass
class _PretrainPlan:
    """What `pretrain` was asked for, checked before any work."""

    objective: str
    backbone: BackboneOptions
    schedule: PretrainOptions
    data_options: DataOptions
    run_options: RunOptions
    objective_options: ObjectiveOptions
    out: Path
    run_dir: Path
    started: float = field(default_factory=time.perf_counter)
    fingerprint: str = ""  # of the readable data (what --resume must find unchanged), set when the run starts


def pretrain(
    data: str | Path | UnlabeledData,
    objective: str = "contrastive",
    backbone: str | BackboneOptions = "smallcnn",
    *,
    out: str | Path,
    schedule: PretrainOptions | None = None,
    data_options: DataOptions | None = None,
    run_options: RunOptions | None = None,
    run_dir: str | Path | None = None,
    **objective_options: Any,
) -> Pretrained:
    """Train `backbone` on unlabeled `data` with a self-supervised `objective`; save it to `out`.

    Images: objective autoencoder (`denoise=True` for the denoising variant), masked (`mask_ratio`) or
    contrastive (`temperature`); the encoder starts from random weights, or from `schedule.from_weights`
    ('pretrained' for the backbone's published weights, a timm weights file, or a folder from an earlier
    `pretrain`). Text: objective mlm (`whole_word`) on a Transformers encoder (e.g. 'minilm'), continuing from its
    pre-trained weights. `backbone`: a name or `BackboneOptions` (its `image_size`, `max_length`).
    `schedule` (`PretrainOptions`): training stops at the first of `epochs`, `max_steps` and `max_minutes`;
    `batch_size`, `lr`. `data_options`: its `text_column` and `strict` apply; `run_options`: its `seed`,
    `precision`, `resume` and `logger`. As in `fit`, any field of these objects may be given as a keyword
    argument. Checkpoints go to `run_dir` (default OUT.run/, a run folder) and `resume=True` continues (or
    extends, with a larger budget) the run found there; the loss curve is logged there too, as `logger` says
    (csv, tensorboard or mlflow). Returns the folder and its manifest.
    """
    request = _plan_pretrain(objective, backbone, out, schedule, data_options, run_options, run_dir,
                             objective_options)
    unlabeled, n_skipped, kind = _read_data(request, data)
    obj, base_weights = _build_objective(request, kind, unlabeled)
    batch, epochs, resume = _start_run(request, kind, obj, unlabeled, base_weights)
    s, r = request.schedule, request.run_options
    result = train(obj, obj.dataset(unlabeled), request.run_dir, batch_size=batch, lr=s.lr or kind.default_lr,
                   epochs=epochs, max_steps=s.max_steps, max_minutes=s.max_minutes, precision=r.precision,
                   seed=r.seed, resume=resume, logger=r.logger)
    record = _pretraining_record(request, obj, unlabeled, n_skipped, base_weights, batch, epochs, result)
    trained = obj.trained_backbone()
    trained.is_pretrained = True
    title = f"{objective} pretraining of {request.backbone.name} on {unlabeled.name} ({len(unlabeled)} items)"

    @distributed.on_main
    def save() -> dict[str, Any]:
        plot = plot_loss_curve(record["loss_curve"], title)
        return save_backbone_dir(trained, request.out, record, extra_files={LOSS_PLOT: plot}).model_dump(mode="json")

    return Pretrained(request.out, distributed.broadcast_object(save()))  # rank 0 wrote it; every rank returns it


def _plan_pretrain(objective: str, backbone: str | BackboneOptions, out: str | Path,
                   schedule: PretrainOptions | None, data_options: DataOptions | None,
                   run_options: RunOptions | None, run_dir: str | Path | None,
                   loose: dict[str, Any]) -> _PretrainPlan:
    """The options sorted into their objects (loose keywords too, as `fit` takes them) and checked."""
    if objective not in objective_names():
        raise HeadstartError(f"unknown objective '{objective}': use one of {', '.join(objective_names())}")
    loose = dict(loose)
    backbone = sorted_into(backbone_options(backbone), BackboneOptions, loose, {"backbone": "name"})
    schedule = sorted_into(schedule, PretrainOptions, loose)
    data_options = sorted_into(data_options, DataOptions, loose)
    run_options = sorted_into(run_options, RunOptions, loose)
    names = {f.name for f in dataclasses.fields(ObjectiveOptions) if f.metadata.get("cli", True)}
    unknown = sorted(set(loose) - names)
    if unknown:
        raise HeadstartError(f"pretrain has no option {', '.join(unknown)} (its objectives' options: "
                             f"{', '.join(sorted(names))})")
    options = ObjectiveOptions(**loose, seed=distributed.own_seed(run_options.seed), image_size=backbone.image_size,
                               max_length=backbone.max_length)  # mlm's mask draws: each rank its own seed
    out = Path(out).expanduser()
    _check_out(out)
    run_dir = Path(run_dir).expanduser() if run_dir is not None else out.with_name(out.name + ".run")
    return _PretrainPlan(objective, backbone, schedule, data_options, run_options, options, out, run_dir)


def _read_data(request: _PretrainPlan, data: str | Path | UnlabeledData) -> tuple[UnlabeledData, int, type]:
    """The readable unlabeled items, how many were skipped, and the objective's class for their modality."""
    o = request.data_options
    unlabeled = data if isinstance(data, UnlabeledData) else read_unlabeled(data, o.text_column)
    kind = find_objective(request.objective, unlabeled.modality)
    fitting = objectives_by_modality().get(unlabeled.modality, [])
    ensure_same_modality(kind.modality, unlabeled.modality, f"objective '{request.objective}'",
                         f"{unlabeled.source} holds",
                         f"use --objective {', '.join(fitting)}" if fitting else "no objective pretrains on it yet",
                         HeadstartError)
    readable = without_unreadable(unlabeled, o.strict)
    if len(readable) < 2:
        raise DataError(f"{readable.source} has {len(readable)} usable item(s): pretraining needs at least 2 "
                        "(and thousands to be worth it)")
    ranks = distributed.world_size()
    if len(readable) < ranks:
        raise DataError(f"{readable.source} has {len(readable)} usable item(s), fewer than the {ranks} processes "
                        "that would share them: run fewer processes")
    return readable, len(unlabeled) - len(readable), kind


def _build_objective(request: _PretrainPlan, kind: type, unlabeled: UnlabeledData) -> tuple[Any, str]:
    """The objective around its starting encoder, and where that encoder's weights came from."""
    torch.manual_seed(request.run_options.seed)
    name = request.backbone.name
    net, base_weights = kind.starting_backbone(name, request.schedule.from_weights, request.objective_options)
    ensure_same_modality(net.modality, kind.modality, f"backbone '{name}'",
                         f"objective '{request.objective}' trains on",
                         f"use --backbone {get_modality(kind.modality).suggested_backbone} or another "
                         f"{kind.modality} encoder", BackboneError)
    obj = kind.create(net, unlabeled, request.objective_options)
    if kind.decode_in_workers:
        net.to(memory_format=torch.channels_last)
    return obj, base_weights


def _start_run(request: _PretrainPlan, kind: type, obj: Any, unlabeled: UnlabeledData,
               base_weights: str) -> tuple[int, int, bool]:
    """The batch per process, the planned epochs and whether the run resumes; the run folder checked and its
    settings recorded (what `resume` must find unchanged)."""
    s, r, ranks = request.schedule, request.run_options, distributed.world_size()
    request.fingerprint = unlabeled.fingerprint()
    batch = min(s.batch_size or kind.default_batch_size, len(unlabeled) // ranks)  # per process
    epochs = s.epochs or (10_000 if (s.max_minutes or s.max_steps) else kind.default_epochs)
    # batch_size: the global batch, which the training follows (a run of 2 processes with batch B continues as one
    # with 2B), and which is the batch of one process.
    config = {"objective": request.objective, "objective_options": obj.options, "backbone": request.backbone.name,
              "base_weights": base_weights, "data_fingerprint": request.fingerprint, "batch_size": batch * ranks,
              "seed": r.seed}
    last = request.run_dir / "checkpoints" / "last.ckpt"
    # After torchrun restarts a run whose process died (--max-restarts), it continues from its last checkpoint.
    resume = r.resume or restarted_with_checkpoint(last)
    check_run_folder(request.run_dir, overwrite=False)
    record_run(request.run_dir, "pretrain", config, resume=resume, checkpoint=last)
    log.info("pretraining %s (%s) on %d %s items of %s; batch %d%s; base weights: %s", request.backbone.name,
             request.objective, len(unlabeled), unlabeled.modality, unlabeled.name, batch,
             f" x {ranks} processes" if ranks > 1 else "", base_weights)
    return batch, epochs, resume


def _pretraining_record(request: _PretrainPlan, obj: Any, unlabeled: UnlabeledData, n_skipped: int,
                        base_weights: str, batch: int, epochs: int, result: dict[str, Any]) -> dict[str, Any]:
    """The manifest's record of the run: objective, data, schedule, steps and the loss curve."""
    s, ranks = request.schedule, distributed.world_size()
    losses = result.pop("losses")
    head = max(1, len(losses) // 20)
    return {
        "objective": request.objective, "paper": obj.paper, "options": obj.options,
        "backbone_name": request.backbone.name, "base_weights": base_weights,
        "data": {"source": unlabeled.source, "name": unlabeled.name, "modality": unlabeled.modality,
                 "items": len(unlabeled), "skipped_unreadable": n_skipped, "fingerprint": request.fingerprint,
                 "grayscale": unlabeled.is_grayscale()},
        "batch_size": batch, "lr": s.lr or obj.default_lr, "seed": request.run_options.seed,
        "max_minutes": s.max_minutes, "max_steps": s.max_steps, "epochs_planned": epochs, **result,
        "processes": ranks, "samples_seen": result["steps"] * batch * ranks,
        "first_loss": float(np.mean([v for _, v in losses[:head]])) if losses else None,
        "final_loss": float(np.mean([v for _, v in losses[-head:]])) if losses else None,
        "loss_curve": downsample_curve(losses), "loss_plot": LOSS_PLOT, "run_dir": str(request.run_dir),
        "total_seconds": round(time.perf_counter() - request.started, 1),
    }
