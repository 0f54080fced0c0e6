"""`headstart report RUN`: one self-contained HTML page that says what was trained on what and how far to trust it.

Gathers the facts (the run's manifest and logs, a fresh evaluation on the run's test split or on other labeled
data), draws the figures and lets `evaluation/html_report.py` lay them out. Items are shown by their modality
(`Modality.preview_html`: thumbnails, texts, audio players) and explained by the modality's explainer; nothing
here asks which modality a model has.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ._util import atomic_write_bytes, check_writable
from .data.dataset import Dataset
from .errors import HeadstartError
from .evaluation import figures
from .evaluation.bootstrap import confidence_intervals
from .evaluation.calibration import uncalibrated
from .evaluation.html_report import Section, render, table
from .modalities import get_modality
from .model import TrainedModel, model_folder

log = logging.getLogger("headstart")
EXPLAINED_DIR = "report_files"


def _precision_summary(model: TrainedModel, evaluated_at: str) -> str:
    """fit's --precision with what it resolved to on the training machine, and the precision of these numbers."""
    m = model.manifest
    if m.training_precision is None:  # saved before headstart recorded it
        training = m.precision + (" (what it resolved to was not recorded)" if m.precision == "auto" else "")
    elif m.training_precision == m.precision:
        training = m.precision
    else:
        training = f"{m.precision} ({m.training_precision} on the training machine)"
    return f"training {training}; evaluation {evaluated_at}"


def _overview(model: TrainedModel, metrics: dict[str, Any]) -> str:
    m = model.manifest
    d = m.data
    settings = ", ".join(f"{k}={v}" for k, v in m.strategy.settings.items() if v is not None)
    rows = [("data", d.source if d else "?"),
            ("split sizes", ", ".join(f"{k} {v:,}" for k, v in (d.splits if d else {}).items())),
            *([("split sources", "; ".join(f"{k}: {v}" for k, v in d.origins.items()))] if d and d.origins else []),
            ("labels per class", d.labels_per_class if d and d.labels_per_class else "all"),
            ("classes", f"{len(m.classes)}: {', '.join(m.classes[:12])}{' ...' if len(m.classes) > 12 else ''}"),
            ("backbone", m.backbone_name), ("strategy", f"{m.strategy.name} ({settings})"),
            *_class_balance_row(m.training.get("class_weight")),
            ("seed", d.seed if d else "?"), ("precision", _precision_summary(model, metrics["evaluation_precision"])),
            ("calibration", _calibration_summary(m.calibration, model.temperature)),
            ("timings", ", ".join(f"{k} {v:.1f}s" for k, v in m.timings.items())),
            ("saved", m.saved_at or "?"), ("evaluated on", _evaluated_on(metrics)),
            ("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items()))]
    return table(rows, css_class="kv")


def _class_balance_row(record: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A row when the training classes were imbalanced (largest over 5x the smallest): the ratio and the
    weighting the loss used. Nothing for balanced data, or for models saved before headstart recorded it."""
    if not record or not record.get("imbalanced"):
        return []
    counts = record.get("class_counts") or []
    sizes = f" ({min(counts):,} to {max(counts):,} training items per class)" if counts else ""
    weighting = {"balanced": "balanced class weights (rare classes weighted up in the loss)",
                 "none": "no class weights (--class-weight none)"}.get(record["resolved"], record["resolved"])
    return [("class balance", f"imbalanced: the largest class has {record['imbalance_ratio']:.3g}x the items of the "
                              f"smallest{sizes}; trained with {weighting}")]


def _evaluated_on(metrics: dict[str, Any]) -> str:
    parts = [f"{metrics['evaluated_on']}: {metrics['n']:,} items in {metrics['evaluation_precision']}"]
    if metrics.get("skipped"):
        parts.append(f"{metrics['skipped']} unreadable skipped")
    if metrics.get("fitted_items_left_out"):
        parts.append(f"{metrics['fitted_items_left_out']} items the model was fitted on left out")
    return ", ".join(parts)


def _metrics_table(probs: np.ndarray, labels: np.ndarray, metrics: dict[str, Any]) -> str:
    ci = confidence_intervals(probs, labels)
    names = {"accuracy": "accuracy", "macro_f1": "macro F1", "ece": "calibration error (ECE, 15 bins)",
             "nll": "log loss (NLL)", "brier": "Brier score"}
    rows = [(names[k], f"{v:.4f}", f"{lo:.4f} to {hi:.4f}") for k, (v, lo, hi) in ci.items()]
    rows.append(("ECE before calibration", f"{metrics['ece_uncalibrated']:.4f}", ""))
    return (table(rows, ["metric", "value", "95% interval (bootstrap)"]) +
            '<p class="note">Intervals: 500 bootstrap resamples of the evaluated items (percentile method).</p>')


def _per_class(metrics: dict[str, Any]) -> str:
    rows = [(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"])
            for c, m in metrics["per_class"].items()]
    return table(rows, ["class", "precision", "recall", "F1", "support"])


def _histories(record: Any, prefix: str = "") -> dict[str, list[dict[str, Any]]]:
    """Every `history` list (per-epoch dicts) in the training record, by where it sits (e.g. head_stage)."""
    found: dict[str, list[dict[str, Any]]] = {}
    if isinstance(record, dict):
        for key, value in record.items():
            if key == "history" and isinstance(value, list) and value and isinstance(value[0], dict):
                found[prefix or "head"] = value
            else:
                found.update(_histories(value, key))
    return found


def _learning_curves(model: TrainedModel, run: Path) -> str:
    """Per-epoch histories from the manifest and the Lightning CSV logs of RUN/logs, losses and accuracies apart."""
    import pandas as pd

    losses: dict[str, tuple[list, list]] = {}
    scores: dict[str, tuple[list, list]] = {}
    for stage, history in _histories(model.manifest.training).items():
        for key in history[0]:
            if key != "epoch":
                target = losses if "loss" in key else scores
                target[f"{stage} {key}"] = ([h["epoch"] for h in history], [h[key] for h in history])
    for csv in sorted(run.glob("logs/*/metrics.csv")):
        frame = pd.read_csv(csv)
        for key in frame.columns:
            if key in ("epoch", "step") or not pd.api.types.is_numeric_dtype(frame[key]):
                continue
            rows = frame[["epoch", key]].dropna()
            if rows.empty:
                continue
            per_epoch = rows.groupby("epoch")[key].mean()  # step-level training losses averaged per epoch
            target = losses if "loss" in key else scores
            target[f"finetune {key}"] = (list(per_epoch.index), list(per_epoch.values))
    parts = [figures.curves(s, "epoch", title) for s, title in ((losses, "losses"), (scores, "accuracies"))
             if s]
    return "".join(f'<div class="figure">{p}</div>' for p in parts) or '<p class="note">No training logs recorded.</p>'


def _pretraining_curve(model: TrainedModel) -> str | None:
    """The loss curve of a backbone that `headstart pretrain` made, when its folder is here."""
    file = Path(model.manifest.backbone_name) / "headstart-backbone.json"
    if not file.is_file():
        return None
    pretraining = json.loads(file.read_text()).get("pretraining") or {}
    curve = pretraining.get("loss_curve") or []
    if not curve:
        return None
    x, y = zip(*curve)
    title = f"{pretraining.get('objective', '')} pretraining loss"
    return f'<div class="figure">{figures.curves({"loss": (list(x), list(y))}, "step", title)}</div>'


def _mistakes(model: TrainedModel, data: Dataset, probs: np.ndarray, out_dir: Path, count: int) -> str:
    """The most confident wrong predictions, shown by their modality, each linked to its explanation."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != data.labels)
    if len(wrong) == 0:
        return '<p class="note">No mistakes on these data.</p>'
    worst = wrong[np.argsort(-probs[wrong].max(1), kind="stable")][:count]
    modality = get_modality(model.modality)
    links: dict[int, str] = {}
    note = ""
    try:
        from .explain import explainer_for

        explainer = explainer_for(model)
        for i, e in zip(worst, explainer.explain([data.items[i] for i in worst])):
            name = f"mistake-{int(i)}{explainer.file_suffix}"
            explainer.save(e, out_dir / EXPLAINED_DIR / name)
            links[int(i)] = f"{EXPLAINED_DIR}/{name}"
        note = f'<p class="note">Explanations: {html.escape(explainer.method)}.</p>'
    except HeadstartError as e:
        note = f'<p class="note">No explanations: {html.escape(str(e))}.</p>'
    cards = []
    for i in worst:
        link = f' <a href="{links[int(i)]}">explanation</a>' if int(i) in links else ""
        cards.append(f'<div class="mistake">{modality.preview_html(data.items[i])}'
                     f'<div class="wrong">predicted {html.escape(model.classes[pred[i]])} ({probs[i].max():.2f})</div>'
                     f'<div class="true">true {html.escape(model.classes[data.labels[i]])}</div>{link}</div>')
    return note + f'<div class="mistakes">{"".join(cards)}</div>'


def build_report(run: str | Path, data: str | Path | None = None, out: str | Path | None = None,
                 mistakes: int = 12, precision: str | None = None) -> Path:
    """Evaluate the run's model as `evaluate` does (on its recorded test split, or on `data`; in its evaluation
    precision unless `precision` says otherwise) and write the HTML report; returns its path."""
    run = Path(run).expanduser()
    model = TrainedModel.load(run)
    run_dir = model_folder(run).parent
    out = Path(out).expanduser() if out is not None else run_dir / "report.html"
    if out.is_dir():
        raise HeadstartError(f"--out {out} is a folder: give the HTML file to write, e.g. {out / 'report.html'}")
    check_writable(out.parent, f"--out {out}")  # before the evaluation's minutes, not after them
    evaluation = model.evaluation(data, precision=precision)
    dataset, probs, metrics = evaluation.data, evaluation.probabilities, evaluation.metrics
    labels = np.asarray(dataset.labels)
    where = metrics["evaluated_on"]
    raw = uncalibrated(probs, model.temperature)
    sections = [
        Section("overview", "What was trained on what", _overview(model, metrics)),
        Section("metrics", "Metrics", _metrics_table(probs, labels, metrics)),
        Section("per-class", "Per class", _per_class(metrics)),
        Section("confusion", "Confusion matrix",
                f'<div class="figure">{figures.confusion_heatmap(metrics["confusion_matrix"], model.classes)}</div>'
                '<p class="note">Colour: share of each true class (row); numbers: counts.</p>'),
        Section("calibration", "Reliability before and after calibration",
                '<div class="figure">' + figures.reliability_diagram(
                    [("before calibration", raw, metrics["ece_uncalibrated"]), ("after", probs, metrics["ece"])],
                    labels) + f'</div><p class="note">Temperature {model.temperature:.3f} (Guo et al. 2017); bars '
                              "below the diagonal mean over-confidence.</p>"),
        Section("learning", "Learning curves", _learning_curves(model, run_dir)),
    ]
    pretraining = _pretraining_curve(model)
    if pretraining is not None:
        sections.append(Section("pretraining", "Pretraining loss", pretraining))
    sections.append(Section("mistakes", f"Most confident mistakes (up to {mistakes})",
                            _mistakes(model, dataset, probs, out.parent, mistakes)))
    title = f"{model.manifest.backbone_name} {model.manifest.strategy.name}: {run_dir.name}"
    subtitle = f"accuracy {metrics['accuracy']:.1%} on {len(labels):,} items of {where} ({metrics['evaluation_precision']})"
    atomic_write_bytes(out, render(title, subtitle, sections).encode())
    return out


def _calibration_summary(record: dict | None, temperature: float) -> str:
    if not record:
        return "none (raw softmax)"
    if record.get("method") == "none":
        return f"none (raw softmax): {record.get('reason', 'not fitted')}"
    fitted = f"temperature {temperature:.3f} fitted on {record['n']} validation items"
    check = record.get("acceptance")
    if check is None:  # fitted before cross-validated acceptance
        return fitted
    return (f"{fitted}; kept because it lowered held-out NLL by {check['nll_gain']:.4f} ± {check['nll_gain_se']:.4f} "
            f"per item ({check['folds']}-fold cross-validation)")
