"""`headstart report RUN`: one self-contained HTML page that says what was trained on what and how far to trust it.

Gathers the facts (the run's manifest and logs, a fresh evaluation on the run's test split or on other labeled
data), draws the figures and lets `evaluation/html_report.py` lay them out. Items are shown by their modality
(`Modality.preview_html`: thumbnails, texts, audio players) and explained by the modality's explainer; nothing
here asks which modality a model has. What depends on the task (per-class results and reliability for
classification; per-label results, co-occurrence and thresholds for multi-label; per-target errors, scatter plots and
conformal intervals for regression; entity results, type confusion and highlighted sentences for token tagging)
comes from one table, `TASK_PAGES`, keyed by the task's name.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._util import atomic_write_bytes, check_writable
from .data.dataset import Dataset
from .distributed import on_main
from .errors import HeadstartError
from .evaluation import figures
from .evaluation.bootstrap import confidence_intervals
from .evaluation.calibration import uncalibrated
from .evaluation.html_report import Section, render, table
from .modalities import get_modality
from .model import Evaluation, TrainedModel, model_folder

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


def _overview(model: TrainedModel, metrics: dict[str, Any], pages: TaskPages) -> str:
    m = model.manifest
    d = m.data
    settings = ", ".join(f"{k}={v}" for k, v in m.strategy.settings.items() if v is not None)
    noun = model.task.noun
    rows = [("data", d.source if d else "?"),
            ("split sizes", ", ".join(f"{k} {v:,}" for k, v in (d.splits if d else {}).items())),
            *([("split sources", "; ".join(f"{k}: {v}" for k, v in d.origins.items()))] if d and d.origins else []),
            *pages.data_rows(model),
            ("classes" if noun == "class" else f"{noun}s",
             f"{len(m.classes)}: {', '.join(m.classes[:12])}{' ...' if len(m.classes) > 12 else ''}"),
            ("backbone", m.backbone_name), ("strategy", f"{m.strategy.name} ({settings})"),
            *_class_balance_row(m.training.get("class_weight")),
            ("seed", d.seed if d else "?"), ("precision", _precision_summary(model, metrics["evaluation_precision"])),
            ("calibration", pages.calibration(model)),
            ("timings", ", ".join(f"{k} {v:.1f}s" for k, v in m.timings.items())),
            ("saved", m.saved_at or "?"), ("evaluated on", _evaluated_on(metrics)),
            ("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items()))]
    return table(rows, css_class="kv")


def _labels_per_class_row(model: TrainedModel) -> list[tuple[str, Any]]:
    d = model.manifest.data
    return [("labels per class", d.labels_per_class if d and d.labels_per_class else "all")]


def _task_row(model: TrainedModel) -> list[tuple[str, Any]]:
    """What the model predicts and the task's settings (the label separator; targets, loss and coverage)."""
    settings = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in model.task.settings().items()
                         if v is not None)
    return [("task", f"{model.task_name} ({settings})" if settings else model.task_name)]


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


def _learning_curves(model: TrainedModel, run: Path, scores_title: str = "accuracies") -> str:
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
            # Lightning's stage logs plain names; the hand-written loops name their stage as the manifest does
            # (head_stage/val_loss), so a curve the manifest holds too is drawn once.
            stage, _, name = key.rpartition("/")
            target[f"{stage or 'finetune'} {name}"] = (list(per_epoch.index), list(per_epoch.values))
    parts = [figures.curves(s, "epoch", title) for s, title in ((losses, "losses"), (scores, scores_title))
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


@dataclass
class ReportInputs:
    """What the task's sections are drawn from: the model, the evaluated items, their scores (probabilities, or
    values in the targets' units) and metrics, and where the page is written (explanations go beside it)."""

    model: TrainedModel
    data: Dataset
    scores: np.ndarray
    metrics: dict[str, Any]
    out_dir: Path
    mistakes: int


# -- classification ----------------------------------------------------------------------------------------------------
def _classification_headline(metrics: dict[str, Any]) -> str:
    return f"accuracy {metrics['accuracy']:.1%}"


def _classification_sections(r: ReportInputs) -> list[Section]:
    labels, probs, metrics = np.asarray(r.data.labels), r.scores, r.metrics
    raw = uncalibrated(probs, r.model.temperature)
    return [
        Section("metrics", "Metrics", _metrics_table(probs, labels, metrics)),
        Section("per-class", "Per class", _per_class(metrics)),
        Section("confusion", "Confusion matrix",
                f'<div class="figure">{figures.confusion_heatmap(metrics["confusion_matrix"], r.model.classes)}</div>'
                '<p class="note">Colour: share of each true class (row); numbers: counts.</p>'),
        Section("calibration", "Reliability before and after calibration",
                '<div class="figure">' + figures.reliability_diagram(
                    [("before calibration", raw, metrics["ece_uncalibrated"]), ("after", probs, metrics["ece"])],
                    labels) + f'</div><p class="note">Temperature {r.model.temperature:.3f} (Guo et al. 2017); bars '
                              "below the diagonal mean over-confidence.</p>"),
    ]


def _classification_closing(r: ReportInputs) -> list[Section]:
    return [Section("mistakes", f"Most confident mistakes (up to {r.mistakes})",
                    _mistakes(r.model, r.data, r.scores, r.out_dir, r.mistakes))]


def _no_mistakes(r: ReportInputs) -> list[Section]:
    """The mistakes section of other tasks: a note (a confident mistake and its explanation are one class's)."""
    return [Section("mistakes", "Most confident mistakes",
                    f'<p class="note">Confident mistakes and their explanations are shown for classification models; '
                    f"this model is {html.escape(r.model.task_name)} (not supported yet).</p>")]


# -- multilabel --------------------------------------------------------------------------------------------------------
def _multilabel_headline(metrics: dict[str, Any]) -> str:
    return f"macro F1 {metrics['macro_f1']:.3f}, mAP {metrics['map']:.3f}"


def _multilabel_sections(r: ReportInputs) -> list[Section]:
    m = r.metrics
    summary = [("mean average precision (mAP)", f"{m['map']:.4f}"), ("macro F1", f"{m['macro_f1']:.4f}"),
               ("micro F1", f"{m['micro_f1']:.4f}"), ("subset accuracy (every label right)", f"{m['subset_accuracy']:.4f}"),
               ("Hamming loss (share of wrong item-label decisions)", f"{m['hamming_loss']:.4f}"),
               ("log loss (mean over labels)", f"{m['log_loss']:.4f}"),
               ("labels per item (true / predicted)",
                f"{m['labels_per_item']:.2f} / {m['predicted_labels_per_item']:.2f}")]
    per_label = [(name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}",
                  "-" if v["average_precision"] is None else f"{v['average_precision']:.3f}", f"{v['threshold']:.3g}",
                  v["support"]) for name, v in m["per_label"].items()]
    return [
        Section("metrics", "Metrics",
                table(summary, ["metric", "value"]) +
                '<p class="note">F1, subset accuracy and Hamming loss count the decisions at each label\'s tuned '
                "threshold (what predict gives); mAP ranks the scores and needs no threshold.</p>"),
        Section("per-label", "Per label",
                table(per_label, ["label", "precision", "recall", "F1", "AP", "threshold", "support"]) +
                '<p class="note">AP: average precision (area under the precision-recall curve); "-" for a label with '
                "no item here. Support: items that carry the label.</p>"),
        Section("co-occurrence", "Label co-occurrence",
                f'<div class="figure">{figures.co_occurrence_heatmap(m["co_occurrence"], m["labels"])}</div>'
                '<p class="note">Colour: share of the row label\'s items that also carry the column label; numbers: '
                "counts of evaluated items with both (the diagonal: items with the label).</p>"),
        Section("calibration", "Calibration and thresholds", _multilabel_calibration(r.model)),
    ]


def _multilabel_calibration(model: TrainedModel) -> str:
    """Each label's temperature and decision threshold, with the record of how they were chosen."""
    params = model.task_params
    temperatures = params.get("temperatures") or [1.0] * len(model.classes)
    thresholds = params.get("thresholds") or [0.5] * len(model.classes)
    rows = [(name, f"{t:.3f}", f"{h:.3g}") for name, t, h in zip(model.classes, temperatures, thresholds)]
    return (f'<p>{html.escape(_multilabel_calibration_summary(model))}</p>' +
            table(rows, ["label", "temperature", "threshold"]) +
            '<p class="note">A label\'s probability is sigmoid(logit / temperature); it is predicted when the '
            "probability reaches its threshold. Temperature 1: left as trained.</p>")


def _multilabel_calibration_summary(model: TrainedModel) -> str:
    record = model.manifest.calibration
    if not record:
        return "none recorded (probabilities as trained, thresholds 0.5)"
    if record.get("method") == "none":
        temperatures = f"no temperatures: {record.get('reason', 'not fitted')}"
    else:
        temperatures = (f"temperature per label kept for {record['kept']} of {record['of']} labels (log loss "
                        f"{record['log_loss_before']:.4f} -> {record['log_loss_after']:.4f} on {record['n']} "
                        "validation items)")
    thresholds = record.get("thresholds") or {}
    tuned = (f"; thresholds tuned for {thresholds['tuned']} of {thresholds['of']} labels ({thresholds['method']})"
             if thresholds else "")
    return temperatures + tuned


# -- regression --------------------------------------------------------------------------------------------------------
def _regression_headline(metrics: dict[str, Any]) -> str:
    over = f" (mean over {len(metrics['targets'])} targets)" if len(metrics["targets"]) > 1 else ""
    return f"R² {_number(metrics['r2'], 3)}, Pearson r {_number(metrics['pearson'], 3)}{over}"


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


REGRESSION_METRICS = (("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²"), ("pearson", "Pearson r"),
                      ("spearman", "Spearman r"))


def _regression_sections(r: ReportInputs) -> list[Section]:
    m = r.metrics
    intervals = "interval_coverage" in m
    interval_keys = (("interval_coverage", "interval coverage"), ("interval_width", "interval width")) if intervals \
        else ()
    summary = [(label, _number(m[key])) for key, label in (*REGRESSION_METRICS, *interval_keys)]
    per_target = [(name, *(_number(v[key]) for key, _ in (*REGRESSION_METRICS, *interval_keys)))
                  for name, v in m["per_target"].items()]
    over = f" (means over the {len(m['targets'])} targets)" if len(m["targets"]) > 1 else ""
    coverage = (f"Intervals: split conformal for {m['interval_target_coverage']:.0%} coverage; coverage is the share "
                "of evaluated items whose true value lies inside, width the interval's (2 × its half width)."
                if intervals else "No prediction intervals (too few validation items to fit them).")
    half_widths = r.model.task_params.get("interval_half_widths") if intervals else None
    return [
        Section("metrics", "Metrics", table(summary, ["metric" + over, "value"]) +
                f'<p class="note">{html.escape(coverage)}</p>'),
        Section("per-target", "Per target",
                table(per_target, ["target", *(label for _, label in (*REGRESSION_METRICS, *interval_keys))]) +
                '<p class="note">MAE and RMSE in the target\'s units; "-" where a correlation is undefined (constant '
                "values).</p>"),
        Section("scatter", "Predicted against true",
                '<div class="figure">' + figures.predicted_vs_true(np.asarray(r.data.labels), r.scores,
                                                                   r.model.classes, half_widths) +
                '</div><p class="note">One point per evaluated item; on the grey diagonal the prediction is exact'
                + ("; between the dashed lines the prediction interval covers the true value" if intervals else "")
                + ".</p>"),
        Section("calibration", "Prediction intervals", _conformal_table(r.model, m)),
    ]


def _conformal_table(model: TrainedModel, metrics: dict[str, Any]) -> str:
    """The conformal record: per target the half width fitted on the validation split, the coverage it had there
    and the coverage on the evaluated items."""
    record = model.manifest.calibration or {}
    if record.get("method") != "split conformal":
        return f'<p class="note">{html.escape(_regression_calibration_summary(model))}</p>'
    rows = [(name, f"{q:.4g}", f"{2 * q:.4g}", f"{v:.3f}", _number(metrics["per_target"][name].get("interval_coverage"), 3))
            for name, q, v in zip(model.classes, record["half_widths"], record["validation_coverage"])]
    return (f'<p>{html.escape(_regression_calibration_summary(model))}</p>' +
            table(rows, ["target", "half width", "width", "coverage (validation)", "coverage (evaluated)"]) +
            '<p class="note">Split conformal prediction (Lei et al. 2018): the half width is the ⌈(n+1)·c⌉-th '
            "smallest absolute validation residual, so that an interval covers a new item's true value with "
            "probability at least c.</p>")


def _regression_calibration_summary(model: TrainedModel) -> str:
    record = model.manifest.calibration
    if not record:
        return "no prediction intervals recorded"
    if record.get("method") != "split conformal":
        return f"no prediction intervals: {record.get('reason', 'not fitted')}"
    return (f"split conformal intervals for {record['coverage']:.0%} coverage, fitted on {record['n']} validation "
            "items")


# -- tokens ------------------------------------------------------------------------------------------------------------
def _tokens_headline(metrics: dict[str, Any]) -> str:
    return f"entity F1 {metrics['f1']:.4f}, token accuracy {metrics['token_accuracy']:.4f}"


def _tokens_sections(r: ReportInputs) -> list[Section]:
    """Entity-level results (seqeval's, as `evaluate --json` gives them, four digits each), per type, and what
    each true entity was predicted as."""
    m = r.metrics
    summary = [("entity F1 (exact span and type, micro over entities)", f"{m['f1']:.4f}"),
               ("entity precision", f"{m['precision']:.4f}"), ("entity recall", f"{m['recall']:.4f}"),
               ("macro F1 over entity types", f"{m['macro_f1']:.4f}"),
               ("token accuracy (words with the right tag)", f"{m['token_accuracy']:.4f}"),
               ("entities (true / predicted)", f"{m['entities']:,} / {m['predicted_entities']:,}"),
               ("sentences / words", f"{m['n']:,} / {m['words']:,}")]
    per_type = [(kind, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"])
                for kind, v in m["per_type"].items()]
    return [
        Section("metrics", "Metrics",
                table(summary, ["metric", "value"]) +
                '<p class="note">An entity counts as found only with its exact span and type (seqeval, as conlleval '
                "counts them); token accuracy counts each word's tag, O included.</p>"),
        Section("per-type", "Per entity type",
                table(per_type, ["type", "precision", "recall", "F1", "support"]) +
                '<p class="note">Support: true entities of the type.</p>'),
        Section("confusion", "Entity-type confusion", _type_confusion_table(m["type_confusion"])),
    ]


def _type_confusion_table(confusion: dict[str, dict[str, int]]) -> str:
    """True types down, what was predicted over exactly their span across; "(missed)": no predicted entity there;
    the row "(none)": predicted spans that are no true entity's."""
    kinds = sorted({k for k in confusion if k != "(none)"} |
                   {k for row in confusion.values() for k in row if k != "(missed)"})
    rows = [(kind, *(confusion.get(kind, {}).get(c, 0) for c in [*kinds, "(missed)"]))
            for kind in [*kinds, "(none)"]]
    return (table(rows, ["true \\ predicted", *kinds, "(missed)"]) +
            '<p class="note">Rows: true entities by type; columns: the type predicted over exactly the same words, or '
            "(missed) where no predicted entity has that span (a partly overlapping one is still a miss). The row "
            "(none): predicted entities whose span is no true entity's. The diagonal holds the entities found.</p>")


def _highlighted(text: str, spans: set[tuple[int, int, str]], other: set[tuple[int, int, str]]) -> str:
    """`text` (escaped) with each (start, end, type) span marked and its type written after it: green where
    `other` has the same span and type, red where it does not."""
    parts, at = [], 0
    for start, end, kind in sorted(spans):
        css = "hit" if (start, end, kind) in other else "miss"
        parts += [html.escape(text[at:start]), f'<mark class="entity {css}">{html.escape(text[start:end])}'
                                               f'<span class="type">{html.escape(kind)}</span></mark>']
        at = end
    return "".join(parts) + html.escape(text[at:])


def _entity_mistakes(r: ReportInputs) -> str:
    """The sentences whose predicted entities differ from the true ones (most differences first), each shown
    twice with its entities highlighted: the true ones, then the predicted ones."""
    from .runtime.entities import entities, tag_chunks
    from .tasks.tokens import IGNORE

    names, wrong = r.model.classes, []
    for i, (row, scores) in enumerate(zip(np.asarray(r.data.labels), r.scores)):
        tags = [names[t] for t in row[row != IGNORE]]
        gold = {(scores.spans[a][0], scores.spans[b][1], kind) for kind, a, b in tag_chunks(tags)}
        predicted = {(e["start"], e["end"], e["type"]) for e in entities(scores, names)}
        if gold != predicted:
            wrong.append((len(gold ^ predicted), i, gold, predicted))
    if not wrong:
        return '<p class="note">No mistakes on these data: every sentence has exactly its true entities.</p>'
    wrong.sort(key=lambda w: (-w[0], w[1]))
    cards = [f'<div class="sentence"><div><span class="label">true</span>'
             f'{_highlighted(r.scores[i].text, gold, predicted)}</div><div><span class="label">predicted</span>'
             f'{_highlighted(r.scores[i].text, predicted, gold)}</div></div>'
             for _, i, gold, predicted in wrong[:r.mistakes]]
    return (f'<p class="note">Sentences whose predicted entities differ from the true ones: {len(wrong):,} of '
            f"{len(r.scores):,}; shown: {len(cards)}, those with the most wrong entities (missed plus wrongly "
            "predicted) first. Green: the other line has the same span and type; red: a missed entity (true line) or "
            "a wrong one (predicted line).</p>"
            f'<div class="sentences">{"".join(cards)}</div>')


def _tokens_closing(r: ReportInputs) -> list[Section]:
    return [Section("mistakes", f"Sentences with mistakes (up to {r.mistakes})", _entity_mistakes(r))]


# -- one entry per task ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskPages:
    """What the report shows of one task: the subtitle's headline numbers, the overview's task rows and
    calibration line, the sections after the overview, the title of the validation-score curves, and the closing
    sections (after the learning curves)."""

    headline: Callable[[dict[str, Any]], str]
    sections: Callable[[ReportInputs], list[Section]]
    calibration: Callable[[TrainedModel], str]
    data_rows: Callable[[TrainedModel], list[tuple[str, Any]]] = _task_row
    scores_title: str = "validation scores"
    closing: Callable[[ReportInputs], list[Section]] = _no_mistakes


# The report of each task, keyed by the metrics' `task` (the one place the report asks which task); a new task adds
# its entry.
TASK_PAGES: dict[str, TaskPages] = {
    "classification": TaskPages(_classification_headline, _classification_sections,
                                lambda model: _calibration_summary(model.manifest.calibration, model.temperature),
                                _labels_per_class_row, "accuracies", _classification_closing),
    "multilabel": TaskPages(_multilabel_headline, _multilabel_sections, _multilabel_calibration_summary),
    "regression": TaskPages(_regression_headline, _regression_sections, _regression_calibration_summary),
    "tokens": TaskPages(_tokens_headline, _tokens_sections,
                        lambda model: "none: each word takes its most probable tag (nothing is tuned for entities)",
                        scores_title="validation entity F1", closing=_tokens_closing),
}


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
    on_main(check_writable)(out.parent, f"--out {out}")  # before the evaluation's minutes, not after them
    if model.task_name not in TASK_PAGES:
        raise HeadstartError(f"report does not support {model.task_name} models yet (it supports "
                             f"{', '.join(TASK_PAGES)})")
    evaluation = model.evaluation(data, precision=precision)  # under torchrun each rank embeds its share
    return _write_report(model, run_dir, evaluation, out, mistakes)


@on_main
def _write_report(model: TrainedModel, run_dir: Path, evaluation: Evaluation, out: Path, mistakes: int) -> Path:
    """The report's sections, the mistakes' explanations and the HTML file: rank 0's alone under torchrun (every
    rank has the whole evaluation by then; the others wait for the file)."""
    pages = TASK_PAGES[model.task_name]
    metrics = evaluation.metrics
    inputs = ReportInputs(model, evaluation.data, evaluation.probabilities, metrics, out.parent, mistakes)
    sections = [Section("overview", "What was trained on what", _overview(model, metrics, pages)),
                *pages.sections(inputs),
                Section("learning", "Learning curves", _learning_curves(model, run_dir, pages.scores_title))]
    pretraining = _pretraining_curve(model)
    if pretraining is not None:
        sections.append(Section("pretraining", "Pretraining loss", pretraining))
    sections += pages.closing(inputs)
    title = f"{model.manifest.backbone_name} {model.manifest.strategy.name}: {run_dir.name}"
    subtitle = (f"{pages.headline(metrics)} on {metrics['n']:,} items of {metrics['evaluated_on']} "
                f"({metrics['evaluation_precision']})")
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
