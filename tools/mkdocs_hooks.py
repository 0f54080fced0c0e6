"""mkdocs hooks for the documentation site (mkdocs.yml: `hooks:`), so that nothing in it is maintained twice.

- `<!-- readme-section: NAME -->` in a page is replaced by the README.md section headed NAME (its heading, its
  text and its sub-sections; for the title, its introduction), so sections that live in the README (setup,
  scaling out, the architecture) are written once. `top=1` after the name lifts the section's headings one level
  (for a page that is one section). Links to `docs/PAGE.md` in that text become links to PAGE.md, as seen from the site.
- `<!-- api-reference -->` is replaced by one mkdocstrings block per name in `headstart.__all__`, read from
  src/headstart/__init__.py, so that the API reference lists every public name with no list kept by hand.

Hand-written because the snippets extension includes a README section only between marker comments in the
README, and no plug-in lists a package's `__all__` when its names are re-exported lazily (PEP 562).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE_INIT = ROOT / "src" / "headstart" / "__init__.py"

README_SECTION = re.compile(r"<!--\s*readme-section:\s*(?P<name>[^>]*?)(?:\s+top=(?P<top>\d))?\s*-->")
API_REFERENCE = "<!-- api-reference -->"
HEADING = re.compile(r"^(#{1,6}) (.*)$")
FENCE = re.compile(r"^\s*(```|~~~)")


class ReadmeSectionError(ValueError):
    """A page asks for a README section that is not there (a renamed heading): the build must fail, not skip it."""


def public_names(init: Path = PACKAGE_INIT) -> list[str]:
    """`headstart.__all__` as written in the package's __init__.py, read without importing the package."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"{init} has no __all__")


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line index, level, title) of each markdown heading outside fenced code blocks."""
    found, in_fence = [], False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := HEADING.match(line)):
            found.append((i, len(m.group(1)), m.group(2).strip()))
    return found


def readme_section(name: str, text: str | None = None) -> str:
    """The README section headed `name`: from its heading to the next heading of the same or a higher level; for
    the title (level 1), to the next heading of any level (the introduction)."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    headings = _headings(lines)
    for n, (start, level, title) in enumerate(headings):
        if title == name:
            stop_level = 6 if level == 1 else level  # the title's section is its introduction
            end = next((i for i, lv, _ in headings[n + 1:] if lv <= stop_level), len(lines))
            return "\n".join(lines[start:end]).strip() + "\n"
    known = ", ".join(repr(t) for _, _, t in headings)
    raise ReadmeSectionError(f"README.md has no section headed {name!r} (its headings: {known})")


def _lift_headings(section: str, levels: int) -> str:
    """Each heading `levels` levels higher (## -> #), leaving fenced code alone."""
    out, in_fence = [], False
    for line in section.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := HEADING.match(line)):
            line = "#" * max(1, len(m.group(1)) - levels) + " " + m.group(2)
        out.append(line)
    return "\n".join(out) + "\n"


def _site_links(section: str) -> str:
    """README links into docs/ as the site sees them: `](docs/data.md#splits)` -> `](data.md#splits)`."""
    return re.sub(r"\]\(docs/", "](", section)


def include_readme_sections(markdown: str) -> str:
    """Replace each `<!-- readme-section: NAME -->` with the README's section NAME."""
    def section(m: re.Match[str]) -> str:
        text = _site_links(readme_section(m.group("name").strip()))
        return _lift_headings(text, int(m.group("top")) if m.group("top") else 0)
    return README_SECTION.sub(section, markdown)


def api_reference(names: list[str]) -> str:
    """mkdocstrings blocks for `names`: functions, then classes, then module attributes (such as __version__)."""
    functions = sorted(n for n in names if n[0].islower())
    classes = sorted(n for n in names if n[0].isupper())
    attributes = sorted(n for n in names if n.startswith("_"))
    parts = []
    for title, group in (("Functions", functions), ("Classes", classes), ("Module attributes", attributes)):
        if group:
            parts.append(f"## {title}\n")
            parts.extend(f"::: headstart.{name}\n" for name in group)
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: expand the README includes and the API reference before the page is rendered."""
    markdown = include_readme_sections(markdown)
    if API_REFERENCE in markdown:
        markdown = markdown.replace(API_REFERENCE, api_reference(public_names()))
    return markdown
