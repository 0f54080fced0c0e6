"""Metrics printed as tables a person can read."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def metrics_tables(metrics: dict[str, Any], title: str = "held-out results") -> list[Table]:
    """The summary (what was evaluated, how many items) and the task's own tables."""
    summary = Table(title=title, show_header=False)
    if "evaluated_on" in metrics:
        summary.add_row("evaluated on", str(metrics["evaluated_on"]))
    if "evaluation_precision" in metrics:
        summary.add_row("precision", str(metrics["evaluation_precision"]))
    summary.add_row("examples", str(metrics["n"]))
    if metrics.get("fitted_items_left_out"):
        summary.add_row("left out", f"{metrics['fitted_items_left_out']} items the model was fitted on")
    return [summary, *TASK_TABLES[metrics.get("task", "classification")](metrics, summary)]


def _precision_recall_table(title: str, first: str, rows: dict[str, dict[str, Any]]) -> Table:
    """A table of precision, recall, F1 and support per name (a class, an entity type)."""
    out = Table(title=title)
    for col in (first, "precision", "recall", "F1", "support"):
        out.add_column(col, justify="left" if col == first else "right")
    for name, m in rows.items():
        out.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    return out


def _classification_tables(metrics: dict[str, Any], summary: Table) -> list[Table]:
    summary.add_row("accuracy", f"{metrics['accuracy']:.4f}")
    summary.add_row("macro F1", f"{metrics['macro_f1']:.4f}")
    if "ece_uncalibrated" in metrics and metrics.get("temperature", 1.0) != 1.0:
        summary.add_row("calibration error (ECE)", f"{metrics['ece']:.4f} (before calibration "
                        f"{metrics['ece_uncalibrated']:.4f}, temperature {metrics['temperature']:.3f})")
    else:
        summary.add_row("calibration error (ECE)", f"{metrics['ece']:.4f}")
    if "nll" in metrics:
        summary.add_row("log loss (NLL) / Brier", f"{metrics['nll']:.4f} / {metrics['brier']:.4f}")
    tables = [_precision_recall_table("per class", "class", metrics["per_class"])]
    if len(metrics["classes"]) <= 20:
        confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
        confusion.add_column("")
        for c in metrics["classes"]:
            confusion.add_column(c[:8], justify="right")
        for c, row in zip(metrics["classes"], metrics["confusion_matrix"]):
            confusion.add_row(c[:12], *map(str, row))
        tables.append(confusion)
    return tables


def _multilabel_tables(metrics: dict[str, Any], summary: Table) -> list[Table]:
    summary.add_row("macro F1 / micro F1", f"{metrics['macro_f1']:.4f} / {metrics['micro_f1']:.4f}")
    summary.add_row("mean average precision (mAP)", f"{metrics['map']:.4f}")
    summary.add_row("subset accuracy", f"{metrics['subset_accuracy']:.4f}")
    summary.add_row("Hamming loss", f"{metrics['hamming_loss']:.4f}")
    summary.add_row("labels per item (true / predicted)",
                    f"{metrics['labels_per_item']:.2f} / {metrics['predicted_labels_per_item']:.2f}")
    per_label = Table(title="per label (at its tuned threshold)")
    for col in ("label", "precision", "recall", "F1", "AP", "threshold", "support"):
        per_label.add_column(col, justify="left" if col == "label" else "right")
    for name, m in metrics["per_label"].items():
        ap = "-" if m["average_precision"] is None else f"{m['average_precision']:.3f}"
        per_label.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", ap,
                          f"{m['threshold']:.3g}", str(m["support"]))
    return [per_label]


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _regression_tables(metrics: dict[str, Any], summary: Table) -> list[Table]:
    intervals = "interval_coverage" in metrics
    per_target = Table(title="per target" + (f" (intervals for {metrics['interval_target_coverage']:.0%} coverage)"
                                             if intervals else ""))
    columns = ["target", "MAE", "RMSE", "R²", "Pearson", "Spearman"] + (["coverage", "width"] if intervals else [])
    for col in columns:
        per_target.add_column(col, justify="left" if col == "target" else "right")
    for name, m in metrics["per_target"].items():
        row = [_number(m[k]) for k in ("mae", "rmse", "r2", "pearson", "spearman")]
        if intervals:
            row += [_number(m["interval_coverage"], 3), _number(m["interval_width"])]
        per_target.add_row(name, *row)
    if len(metrics["per_target"]) > 1:
        summary.add_row("mean over targets", "")
    for key, label in (("r2", "R²"), ("pearson", "Pearson r"), ("spearman", "Spearman r"), ("mae", "MAE"),
                       ("rmse", "RMSE")):
        summary.add_row(label, _number(metrics[key]))
    if intervals:
        summary.add_row("interval coverage / width", f"{_number(metrics['interval_coverage'], 3)} / "
                        f"{_number(metrics['interval_width'])}")
    return [per_target]


def _token_tables(metrics: dict[str, Any], summary: Table) -> list[Table]:
    summary.add_row("entity F1 / precision / recall (exact span and type)",
                    f"{metrics['f1']:.4f} / {metrics['precision']:.4f} / {metrics['recall']:.4f}")
    summary.add_row("token accuracy", f"{metrics['token_accuracy']:.4f}")
    summary.add_row("entities (true / predicted)", f"{metrics['entities']} / {metrics['predicted_entities']}")
    return [_precision_recall_table("per entity type", "type", metrics["per_type"])]


# The tables of each task's metrics (keyed by the metrics' `task`), here in the evaluation layer that the tasks
# build on; a new task adds its function.
TASK_TABLES = {"classification": _classification_tables, "multilabel": _multilabel_tables,
               "regression": _regression_tables, "tokens": _token_tables}


def print_metrics(metrics: dict[str, Any], title: str = "held-out results", console: Console | None = None) -> None:
    console = console or Console()
    for table in metrics_tables(metrics, title):
        console.print(table)
