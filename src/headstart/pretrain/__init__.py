"""`pretrain`: self-supervised training on the user's own unlabeled data, saved as a backbone folder that
`fit --backbone FOLDER` takes. One module per objective, each naming the paper it follows:

- autoencoder.py  reconstruct the image from its embedding (denoising variant with `denoise=True`)
- masked.py       masked image modelling (SimMIM-style)
- contrastive.py  SimCLR: two augmented views, NT-Xent, projection head
- mlm.py          continued masked-language-model pretraining of a Transformers encoder
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._util import stable_json
from ..artifact import save_backbone_dir
from ..backbones.base import Backbone
from ..backbones.registry import BACKBONE_MANIFEST, resolve_backbone
from ..data.images import find_unreadable
from ..embeddings import failure_summary
from ..errors import BackboneError, DataError, HeadstartError
from .autoencoder import Autoencoder
from .base import Objective
from .contrastive import SimCLR
from .masked import MaskedImageModelling
from .mlm import MaskedLanguageModel
from .trainer import downsample_curve, plot_loss_curve, train
from .unlabeled import UnlabeledData, read_unlabeled

log = logging.getLogger("headstart")

OBJECTIVES: dict[str, type[Objective]] = {"autoencoder": Autoencoder, "masked": MaskedImageModelling,
                                          "contrastive": SimCLR, "mlm": MaskedLanguageModel}
DEFAULT_EPOCHS = {"image": 20, "text": 3}
RUN_CONFIG = "pretrain-config.json"
LOSS_PLOT = "loss_curve.png"

__all__ = ["OBJECTIVES", "Pretrained", "UnlabeledData", "pretrain", "read_unlabeled"]


@dataclass
class Pretrained:
    """What `pretrain` returns: the backbone folder and its manifest (objective, data, steps, loss curve)."""

    path: Path
    manifest: dict[str, Any]

    @property
    def pretraining(self) -> dict[str, Any]:
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


def _image_backbone(backbone: str, from_weights: str | None, image_size: int | None) -> tuple[Backbone, str]:
    """The encoder to train and a description of its starting weights."""
    if from_weights is None:
        net = resolve_backbone(backbone, pretrained=False, image_size=image_size)
        return net, ("random init" if not Path(backbone).expanduser().is_dir() else f"backbone folder {backbone}")
    if from_weights == "pretrained":
        net = resolve_backbone(backbone, pretrained=True, image_size=image_size)
        if not net.is_pretrained:
            raise BackboneError(f"backbone '{backbone}' has no published pre-trained weights: drop --from, or give "
                                "a weights file or an earlier pretrained folder")
        return net, net.spec.get("source") or backbone
    path = Path(from_weights).expanduser()
    if path.is_dir() and (path / BACKBONE_MANIFEST).is_file():
        return resolve_backbone(str(path)), f"backbone folder {path}"
    if not path.exists():
        raise BackboneError(f"--from {from_weights}: no such file or folder (give 'pretrained', a weights file, or a "
                            "folder written by `headstart pretrain`)")
    if backbone == "smallcnn":
        from safetensors.torch import load_model

        net = resolve_backbone(backbone, image_size=image_size)
        try:
            load_model(net, str(path))
        except Exception as e:
            raise BackboneError(f"--from {path}: not smallcnn weights in safetensors format ({type(e).__name__}); "
                                "give a folder written by `headstart pretrain` instead") from e
        return net, str(path)
    if not backbone.startswith("timm:") and backbone != "efficientnet_lite0":
        raise BackboneError(f"--from FILE works with timm:<name> backbones; for '{backbone}' give a folder written "
                            "by `headstart pretrain`")
    net = resolve_backbone(backbone, weights=str(path), image_size=image_size)
    return net, str(path)


def _drop_unreadable(data: UnlabeledData, strict: bool) -> tuple[UnlabeledData, int]:
    if data.modality != "image" or isinstance(data.items, np.ndarray):
        return data, 0
    failures = find_unreadable(data.items)
    if not failures:
        return data, 0
    message = f"{data.name}: {failure_summary(data.items, failures)}"
    if strict:
        raise DataError(message + " (without --strict they are skipped)")
    log.warning(message)
    bad = {i for i, _ in failures}
    return data.subset([i for i in range(len(data)) if i not in bad]), len(bad)


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
) -> Pretrained:
    """Train `backbone` on unlabeled `data` with a self-supervised `objective`; save it to `out`.

    Images: objective autoencoder (`denoise=True` for the denoising variant), masked or contrastive; the
    encoder starts from random weights, or from `from_weights` ('pretrained' for the backbone's published
    weights, a timm weights file, or a folder from an earlier `pretrain`). Text: objective mlm on a Transformers
    encoder (e.g. 'minilm'), continuing from its pre-trained weights. Training stops at the first of `epochs`,
    `max_steps` and `max_minutes`; checkpoints go to `run_dir` (default OUT.run/) and `resume=True` continues
    (or extends, with a larger budget) the run found there. Returns the folder and its manifest.
    """
    if objective not in OBJECTIVES:
        raise HeadstartError(f"unknown objective '{objective}': use one of {', '.join(OBJECTIVES)}")
    if precision not in ("auto", "fp32", "bf16"):
        raise HeadstartError(f"precision must be auto, fp32 or bf16, got '{precision}'")
    _check_positive(epochs=epochs, max_minutes=max_minutes, max_steps=max_steps, batch_size=batch_size, lr=lr,
                    image_size=image_size, max_length=max_length, temperature=temperature)
    if not 0 < mask_ratio < 1:
        raise HeadstartError(f"--mask-ratio must be between 0 and 1, got {mask_ratio}")
    kind = OBJECTIVES[objective]
    out = Path(out).expanduser()
    _check_out(out)
    run_dir = Path(run_dir).expanduser() if run_dir is not None else out.with_name(out.name + ".run")
    started = time.perf_counter()

    unlabeled = data if isinstance(data, UnlabeledData) else read_unlabeled(data, text_column)
    if unlabeled.modality != kind.modality:
        image_objectives = ", ".join(k for k, v in OBJECTIVES.items() if v.modality == "image")
        fix = ("use --objective mlm with a text encoder such as minilm" if unlabeled.modality == "text"
               else f"use --objective {image_objectives}")
        raise HeadstartError(f"objective '{objective}' is for {kind.modality}, but {unlabeled.source} holds "
                             f"{unlabeled.modality}: {fix}")
    unlabeled, n_skipped = _drop_unreadable(unlabeled, strict)
    if len(unlabeled) < 2:
        raise DataError(f"{unlabeled.source} has {len(unlabeled)} usable item(s): pretraining needs at least 2 "
                        "(and thousands to be worth it)")

    torch.manual_seed(seed)
    if kind.modality == "text":
        if from_weights is not None:
            if not Path(from_weights).expanduser().is_dir():
                raise BackboneError(f"--from for text must be a model folder; got '{from_weights}' (or give the "
                                    "encoder with --backbone, e.g. minilm, hf:<id> or a folder)")
            backbone = str(from_weights)
        net = resolve_backbone(backbone, max_length=max_length)
        base_weights = getattr(net, "source", "") or backbone
    else:
        net, base_weights = _image_backbone(backbone, from_weights, image_size)
    if net.modality != kind.modality:
        raise BackboneError(f"backbone '{backbone}' takes {net.modality} inputs, but objective '{objective}' trains "
                            f"on {kind.modality}: use {'minilm' if kind.modality == 'text' else 'smallcnn or timm:<name>'}")
    fingerprint = unlabeled.fingerprint()
    grayscale = unlabeled.is_grayscale()

    if kind is Autoencoder:
        obj: Objective = Autoencoder(net, grayscale, denoise=denoise)
    elif kind is MaskedImageModelling:
        obj = MaskedImageModelling(net, grayscale, mask_ratio=mask_ratio)
    elif kind is SimCLR:
        obj = SimCLR(net, grayscale, temperature=temperature)
    else:
        obj = MaskedLanguageModel(net, whole_word=whole_word, seed=seed)
    if kind.modality == "image":
        net.to(memory_format=torch.channels_last)
    batch = min(batch_size or kind.default_batch_size, len(unlabeled))
    epochs = epochs or (10_000 if (max_minutes or max_steps) else DEFAULT_EPOCHS[kind.modality])
    config = {"objective": objective, "objective_options": obj.options, "backbone": backbone,
              "base_weights": base_weights, "data_fingerprint": fingerprint, "batch_size": batch, "seed": seed}
    _check_run_dir(run_dir, config, resume)
    log.info("pretraining %s (%s) on %d %s items of %s; batch %d; base weights: %s", backbone, objective,
             len(unlabeled), unlabeled.modality, unlabeled.name, batch, base_weights)

    result = train(obj, obj.dataset(unlabeled), run_dir, batch_size=batch, lr=lr or kind.default_lr, epochs=epochs,
                   max_steps=max_steps, max_minutes=max_minutes, precision=precision, seed=seed, resume=resume)
    trained = obj.trained_backbone()
    trained.is_pretrained = True
    losses = result.pop("losses")
    curve = downsample_curve(losses)
    head = max(1, len(losses) // 20)
    info = {
        "format": "headstart-backbone",
        "pretraining": {
            "objective": objective, "paper": obj.paper, "options": obj.options, "backbone_name": backbone,
            "base_weights": base_weights,
            "data": {"source": unlabeled.source, "name": unlabeled.name, "modality": unlabeled.modality,
                     "items": len(unlabeled), "skipped_unreadable": n_skipped, "fingerprint": fingerprint,
                     "grayscale": grayscale},
            "batch_size": batch, "lr": lr or kind.default_lr, "seed": seed, "max_minutes": max_minutes,
            "max_steps": max_steps, "epochs_planned": epochs, **result,
            "samples_seen": result["steps"] * batch,
            "first_loss": float(np.mean([v for _, v in losses[:head]])) if losses else None,
            "final_loss": float(np.mean([v for _, v in losses[-head:]])) if losses else None,
            "loss_curve": curve, "loss_plot": LOSS_PLOT, "run_dir": str(run_dir),
            "total_seconds": round(time.perf_counter() - started, 1),
        },
    }
    title = f"{objective} pretraining of {backbone} on {unlabeled.name} ({len(unlabeled)} items)"
    save_backbone_dir(trained, out, info, extra_files={LOSS_PLOT: plot_loss_curve(curve, title)})
    from ..backbones.registry import read_json

    return Pretrained(out, read_json(out / BACKBONE_MANIFEST))


def _check_run_dir(run_dir: Path, config: dict[str, Any], resume: bool) -> None:
    """Record the run's settings; `resume` must find a checkpoint made with the same ones."""
    import json

    from .._util import atomic_write_json

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
