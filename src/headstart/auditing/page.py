"""The audit's HTML page, in the report's style (`evaluation/html_report.py`): each finding shown by its modality
(thumbnails, texts, audio players), every piece of user text (items, class names, paths) escaped."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .._util import atomic_write_bytes
from ..errors import HeadstartError
from ..evaluation.html_report import Section, render, table
from ..modalities import get_modality
from .findings import KINDS

# `result` below is a data_audit.AuditResult (not imported: data_audit imports this module to write its page).
AuditResult = Any

MAX_CARDS = 60  # per section; the list file holds them all


def _preview(result: AuditResult, index: int) -> str:
    """An item as a person sees it; an item that cannot be shown says why instead of failing the page."""
    try:
        return get_modality(result.modality).preview_html(result.audited.items[index])
    except (OSError, ValueError, HeadstartError) as e:
        return f'<p class="note">cannot show it: {html.escape(str(e))}</p>'


def _card(body: str, lines: list[tuple[str, str]]) -> str:
    rows = "".join(f'<div class="{css}">{html.escape(text)}</div>' for css, text in lines)
    return f'<div class="mistake">{body}{rows}</div>'


def _text_or_preview(result: AuditResult, record: dict[str, Any]) -> str:
    return _preview(result, record["index"])


def _other_preview(result: AuditResult, record: dict[str, Any]) -> str:
    """The other item of a pair: from the audited data, or (against) shown from its description (a path or text)."""
    if record["kind"] != "against":
        return _preview(result, record["other_index"])
    modality = get_modality(result.modality)
    try:
        other = Path(record["other_item"]) if modality.file_extensions else record["other_item"]
        return modality.preview_html(other)
    except (OSError, ValueError, HeadstartError) as e:
        return f'<p class="note">cannot show it: {html.escape(str(e))}</p>'


def _cards(result: AuditResult, kinds: tuple[str, ...], empty: str) -> str:
    records = [r for r in result.records if r["kind"] in kinds]
    if not records:
        return f'<p class="note">{html.escape(empty)}</p>'
    named = bool(get_modality(result.modality).file_extensions)  # a file's preview does not show its path

    def names(*keys: str, r: dict) -> list[tuple[str, str]]:
        return [("note", r[k]) for k in keys] if named else []

    cards = []
    for r in records[:MAX_CARDS]:
        if r["kind"] == "label_error":
            cards.append(_card(_text_or_preview(result, r), [
                ("wrong", f"labeled {r['label']} ({r['split']})"), ("true", f"likely {r['suggested']}"),
                ("note", f"p(given label) {r['score']:.3f}"), *names("item", r=r)]))
        elif r["kind"] == "ambiguous_label":
            cards.append(_card(_text_or_preview(result, r), [
                ("given", f"labeled {r['label']} ({r['split']})"), ("note", f"maybe {r['suggested']}"),
                ("note", f"p(given label) {r['score']:.3f}"), *names("item", r=r)]))
        elif r["kind"] in ("outlier", "unreadable"):
            detail = f"score {r['score']:.3f}" if r["kind"] == "outlier" else r.get("reason", "")
            body = _text_or_preview(result, r) if r["kind"] == "outlier" else ""
            cards.append(_card(body, [("wrong", f"{r['label']} ({r['split']})"), ("note", detail),
                                      *([] if body and not named else [("note", r["item"])])]))
        else:
            same = ("same content" if r["exact"] else
                    f"same content: fingerprints {r['content_similarity']:.3f} (see the notes), embeddings "
                    f"{r['similarity']:.3f}" if r.get("same_content") else f"cosine {r['similarity']:.3f}")
            cards.append(_card(_text_or_preview(result, r) + _other_preview(result, r), [
                ("wrong", f"{r['split']} / {r['other_split']}: {same}"),
                ("note", f"labels {r['label']} / {r['other_label']}"), *names("item", "other_item", r=r)]))
    more = (f'<p class="note">{len(records) - MAX_CARDS} more in the list file.</p>' if len(records) > MAX_CARDS
            else "")
    return f'<div class="mistakes">{"".join(cards)}</div>{more}'


def _overlap(result: AuditResult) -> str:
    if not result.overlapping_classes:
        return '<p class="note">No pair of classes overlaps beyond noise.</p>'
    rows = [(o["class_a"], o["class_b"], o["items"], f"{o['joint_probability']:.4f}")
            for o in result.overlapping_classes[:20]]
    return (table(rows, ["class", "class", "items likely swapped", "joint probability"]) +
            '<p class="note">Classes the probe confuses most (cleanlab\'s find_overlapping_classes): merge them, or '
            'write down how to tell them apart.</p>')


def build_page(result: AuditResult) -> str:
    """The whole page as one HTML string."""
    counts = result.counts()
    summary = [("data", result.data), ("items", f"{result.items:,}"),
               ("splits fit would make", ", ".join(f"{k} {v:,}" for k, v in result.split_sizes.items() if v)),
               ("classes", f"{len(result.classes)}: {', '.join(result.classes[:12])}"
                           f"{' ...' if len(result.classes) > 12 else ''}"),
               ("backbone", result.backbone), *([("against", result.against)] if result.against else []),
               *[(text, counts[kind]) for kind, text in KINDS.items()],
               ("items a clean table keeps", f"{int(result.keep.sum()):,} of {result.items:,}"),
               ("seconds", ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))]
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in result.notes)
    sections = [
        Section("summary", "Summary", table(summary, css_class="kv") + notes),
        Section("label-errors", "Likely label errors",
                _cards(result, ("label_error",), "No likely label errors found.")),
        Section("ambiguous-labels", "Ambiguous labels",
                _cards(result, ("ambiguous_label",), "No ambiguous labels found.") +
                '<p class="note">Confident learning counts these as issues, but the probe still rates the given '
                'label at or above chance: often an item between two plausible classes. Worth a look; the clean '
                'table keeps them.</p>'),
        Section("leaks", "Leaks across the splits and the other data",
                _cards(result, ("leak", "against"), "No item is in two of fit's splits or in the other data.")),
        Section("duplicates", "Duplicates", _cards(result, ("duplicate", "conflicting"), "No duplicates found.")),
        Section("outliers", "Outliers", _cards(result, ("outlier",), "No outliers found.")),
        Section("overlap", "Overlapping classes", _overlap(result)),
    ]
    if counts["unreadable"]:
        sections.append(Section("unreadable", "Unreadable items", _cards(result, ("unreadable",), "")))
    return render(f"Data audit: {result.data}", f"{result.items:,} {result.modality} items, {result.backbone} "
                  "embeddings", sections)


def write_page(result: AuditResult, path: Path) -> Path:
    atomic_write_bytes(path, build_page(result).encode("utf-8"))
    return path
