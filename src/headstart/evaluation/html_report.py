"""One self-contained HTML page from report sections: inline CSS and SVG, no scripts, no network, made to read on
a laptop screen and to print (each section avoids page breaks inside)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

CSS = """
:root { --ink: #1d232a; --muted: #5b6672; --line: #dde2e7; --accent: #2c6fb7; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0;
       background: #f6f8fa; }
main { max-width: 1060px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; min-height: 100vh; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 0 0 10px; color: var(--accent); }
.subtitle { color: var(--muted); margin: 0 0 18px; }
nav { display: flex; flex-wrap: wrap; gap: 6px 14px; margin-bottom: 18px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; }
section { border-top: 1px solid var(--line); padding: 16px 0 12px; break-inside: avoid; page-break-inside: avoid; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0 8px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { font-weight: 600; background: #f1f4f7; }
.kv td { text-align: left; } .kv td:first-child { color: var(--muted); white-space: nowrap; }
.figure svg { max-width: 100%; height: auto; }
.note { color: var(--muted); font-size: 13px; }
.mistakes { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.mistake { border: 1px solid var(--line); border-radius: 6px; padding: 8px; font-size: 13px; min-width: 0;
            overflow-wrap: anywhere; }
.mistake .wrong { color: #b3261e; font-weight: 600; } .mistake .true { color: #1e7b34; }
img.thumb { display: block; max-width: 100%; image-rendering: auto; margin-bottom: 4px; }
q.text { display: block; font-style: italic; margin-bottom: 4px; }
audio { width: 100%; }
.sentences { display: grid; gap: 8px; }
.sentence { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; font-size: 14px; line-height: 1.9; }
.sentence .label { display: inline-block; width: 78px; color: var(--muted); font-size: 12px; }
mark.entity { padding: 1px 3px; border-radius: 3px; } mark.hit { background: #d5eedb; } mark.miss { background: #f7d4d0; }
mark.entity .type { margin-left: 4px; font-size: 10px; font-weight: 600; color: var(--muted); }
@media print { body { background: #fff; } main { padding: 0; max-width: none; } nav { display: none; }
               a { color: inherit; text-decoration: none; } }
"""


@dataclass
class Section:
    id: str
    title: str
    body: str  # HTML


def table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None, css_class: str = "") -> str:
    """An HTML table of already-formatted cells (escaped here)."""
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}">{head}{body}</table>'


def render(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
            f'<h1>{html.escape(title)}</h1><p class="subtitle">{html.escape(subtitle)}</p><nav>{nav}</nav>'
            f"{body}</main></body></html>\n")
