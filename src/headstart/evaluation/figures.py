"""The report's figures as inline SVG (matplotlib, Agg): crisp on screen and in print, no files, no network."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import numpy as np

from .metrics import ECE_BINS


def _svg(fig) -> str:
    from matplotlib import pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF metadata: addresses that are not needed
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML


def _figure(width: float, height: float, columns: int = 1, rows: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.fonttype": "none"})
    return plt.subplots(rows, columns, figsize=(width, height))


def _count_heatmap(counts: np.ndarray, share: np.ndarray, names: Sequence[str], cmap: str, xlabel: str,
                   ylabel: str) -> str:
    """A square heatmap coloured by `share` (0-1) with the `counts` written in the cells (up to 25 names)."""
    n = len(names)
    side = min(9.0, 2.0 + 0.45 * n)
    fig, ax = _figure(side, side * 0.85)
    ax.imshow(share, cmap=cmap, vmin=0, vmax=1)
    short = [c[:14] for c in names]
    ax.set_xticks(range(n), short, rotation=45, ha="right")
    ax.set_yticks(range(n), short)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    return _svg(fig)


def confusion_heatmap(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Rows normalised to recall (colour), counts written in the cells; true classes down, predictions across."""
    m = np.asarray(matrix, dtype=float)
    return _count_heatmap(m, m / np.clip(m.sum(1, keepdims=True), 1, None), classes, "Blues", "predicted", "true")


def _bins(probs: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    accuracy = np.bincount(which, weights=correct, minlength=bins) / np.clip(count, 1, None)
    return edges, accuracy, count


def reliability_diagram(panels: Sequence[tuple[str, np.ndarray, float]], labels: np.ndarray,
                        bins: int = ECE_BINS) -> str:
    """One panel per (title, probabilities, ECE): accuracy per confidence bin against the diagonal."""
    fig, axes = _figure(3.6 * len(panels), 3.4, columns=len(panels))
    axes = np.atleast_1d(axes)
    for ax, (title, probs, ece) in zip(axes, panels):
        edges, accuracy, count = _bins(probs, labels, bins)
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        ax.bar(centres[count > 0], accuracy[count > 0], width=width * 0.95, color="#4c72b0", label="accuracy")
        ax.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title} (ECE {ece:.3f})")
        ax.legend(loc="upper left", fontsize=7)
    return _svg(fig)


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, title: str) -> str:
    """Line plots of named (x, y) series on one axis."""
    fig, ax = _figure(6.0, 3.0)
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _svg(fig)


def co_occurrence_heatmap(counts: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """How often labels occur together: colour is the share of the row label's items that also carry the column
    label (1 on the diagonal), the numbers are counts (the diagonal: items with the label)."""
    m = np.asarray(counts, dtype=float)
    return _count_heatmap(m, m / np.clip(np.diag(m)[:, None], 1, None), labels, "Purples", "also carries",
                          "items with")


def predicted_vs_true(targets: np.ndarray, predictions: np.ndarray, names: Sequence[str],
                      half_widths: Sequence[float] | None = None, columns: int = 3) -> str:
    """One scatter panel per target: predicted against true values, the diagonal of perfect predictions and, with
    `half_widths`, the band a prediction interval covers (true within predicted ± q: between the dashed lines)."""
    k = len(names)
    per_row = min(columns, k)
    rows = -(-k // per_row)
    fig, axes = _figure(3.4 * per_row, 3.3 * rows, columns=per_row, rows=rows)
    for j, ax in enumerate(np.atleast_1d(axes).ravel()):
        if j >= k:
            ax.set_visible(False)
            continue
        y, p = np.asarray(targets)[:, j], np.asarray(predictions)[:, j]
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        pad = (high - low) * 0.05 or 1.0
        low, high = low - pad, high + pad
        ax.scatter(y, p, s=6 if len(y) > 500 else 12, alpha=0.5 if len(y) > 500 else 0.7, color="#4c72b0",
                   linewidths=0)
        ax.plot([low, high], [low, high], color="#888", lw=1, label="predicted = true")
        if half_widths is not None:
            q = float(half_widths[j])
            ax.plot([low, high], [low + q, high + q], ls="--", color="#dd8452", lw=1, label=f"interval (± {q:.3g})")
            ax.plot([low, high], [low - q, high - q], ls="--", color="#dd8452", lw=1)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {names[j][:24]}")
        ax.set_ylabel("predicted")
        ax.set_title(names[j][:30])
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return _svg(fig)
