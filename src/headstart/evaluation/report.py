"""Metrics printed as tables a person can read."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def metrics_tables(metrics: dict[str, Any], title: str = "held-out results") -> list[Table]:
    summary = Table(title=title, show_header=False)
    if "evaluated_on" in metrics:
        summary.add_row("evaluated on", str(metrics["evaluated_on"]))
    if "evaluation_precision" in metrics:
        summary.add_row("precision", str(metrics["evaluation_precision"]))
    summary.add_row("examples", str(metrics["n"]))
    if metrics.get("fitted_items_left_out"):
        summary.add_row("left out", f"{metrics['fitted_items_left_out']} items the model was fitted on")
    summary.add_row("accuracy", f"{metrics['accuracy']:.4f}")
    summary.add_row("macro F1", f"{metrics['macro_f1']:.4f}")
    if "ece_uncalibrated" in metrics and metrics.get("temperature", 1.0) != 1.0:
        summary.add_row("calibration error (ECE)", f"{metrics['ece']:.4f} (before calibration "
                        f"{metrics['ece_uncalibrated']:.4f}, temperature {metrics['temperature']:.3f})")
    else:
        summary.add_row("calibration error (ECE)", f"{metrics['ece']:.4f}")
    if "nll" in metrics:
        summary.add_row("log loss (NLL) / Brier", f"{metrics['nll']:.4f} / {metrics['brier']:.4f}")
    per_class = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for name, m in metrics["per_class"].items():
        per_class.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    tables = [summary, per_class]
    if len(metrics["classes"]) <= 20:
        confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
        confusion.add_column("")
        for c in metrics["classes"]:
            confusion.add_column(c[:8], justify="right")
        for c, row in zip(metrics["classes"], metrics["confusion_matrix"]):
            confusion.add_row(c[:12], *map(str, row))
        tables.append(confusion)
    return tables


def print_metrics(metrics: dict[str, Any], title: str = "held-out results", console: Console | None = None) -> None:
    console = console or Console()
    for table in metrics_tables(metrics, title):
        console.print(table)
