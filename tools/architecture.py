"""Print the README's "Architecture" section from the code: the layers of the import-linter contract in
pyproject.toml, top first, and for each module or package of src/headstart the first sentence of its docstring.

    python tools/architecture.py            # print the section
    python tools/architecture.py --write    # replace the section in README.md
    python tools/architecture.py --check    # exit 1 when README.md's section differs (tests/test_docs.py checks it)

Hand-written because the layer order lives only in pyproject.toml and the descriptions in the docstrings, and no
tool joins the two. Reads files only: nothing of headstart is imported.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "headstart"
README = ROOT / "README.md"
HEADING = "## Architecture"
CONTRACT = "headstart layers"
ENTRY_POINTS = ("__init__", "__main__")  # above every layer, in no contract: the public API and `python -m`


def layers(pyproject: Path = ROOT / "pyproject.toml") -> list[list[str]]:
    """The layered contract's modules, top layer first, each layer a list of names below `headstart.`."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == CONTRACT)
    return [[m.strip().removeprefix("headstart.") for m in layer.split("|")] for layer in contract["layers"]]


def _path(module: str) -> Path:
    package = PACKAGE / module / "__init__.py"
    return package if package.exists() else PACKAGE / f"{module}.py"


def first_sentence(path: Path) -> str:
    """The first sentence of a module's docstring, on one line (up to a full stop followed by a space or the end
    of the first paragraph)."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    if not paragraph:
        raise SystemExit(f"{path.relative_to(ROOT)} has no docstring: say in one sentence what the module does")
    end = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", paragraph)  # not the full stops of "e.g." and "i.e."
    return paragraph[: end.start() + 1] if end else paragraph


def _submodules(module: str) -> list[str]:
    folder = PACKAGE / module
    return sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") if folder.is_dir() else []


def _unlayered(layered: set[str]) -> list[str]:
    """Modules and packages directly under src/headstart that no layer names (other than the entry points)."""
    found = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    return sorted(found - layered - set(ENTRY_POINTS))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def section() -> str:
    """The whole "Architecture" section of README.md, heading included."""
    contract = layers()
    missing = _unlayered({m for layer in contract for m in layer})
    if missing:
        raise SystemExit(f"not in pyproject's '{CONTRACT}' contract: {', '.join(missing)}: give each a layer")
    rows = []
    for number, layer in enumerate(contract, start=1):
        for module in layer:
            parts = _submodules(module)
            name = f"`{module}/`" if parts else f"`{module}.py`"
            what = first_sentence(_path(module)) + (f" Modules: {', '.join(parts)}." if parts else "")
            rows.append(f"| {number} | {name} | {_cell(what)} |")
    return "\n".join([
        HEADING,
        "",
        "`src/headstart/`, one row per module or package, by layer from the top (1) down. A module may import the layers",
        "below its own, never those above; modules of one layer may not import each other. `lint-imports`",
        f"(import-linter, the '{CONTRACT}' contract in `pyproject.toml`) checks this in `make test`, together with the",
        "absence of import cycles inside each package. Above every layer, `__init__.py` is the public API (imported",
        "lazily, PEP 562) and `__main__.py` runs the command line as `python -m headstart`.",
        "",
        "| layer | module | what it does |",
        "| ---: | --- | --- |",
        *rows,
        "",
        "This section is generated from the contract and each module's docstring: after adding a module or changing",
        "a layer, run `python tools/architecture.py --write` (`tests/test_docs.py` fails while it is out of date).",
        "",
    ])


def readme_with(new_section: str, readme: str) -> str:
    """README text with its Architecture section (up to the next `## ` heading) replaced by `new_section`."""
    start = readme.index(HEADING + "\n")
    following = re.search(r"^## ", readme[start + len(HEADING):], flags=re.MULTILINE)
    end = start + len(HEADING) + following.start() if following else len(readme)
    return readme[:start] + new_section + ("\n" if following else "") + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the section in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md's section is out of date")
    args = parser.parse_args(argv)
    text, readme = section(), README.read_text(encoding="utf-8")
    if args.write:
        README.write_text(readme_with(text, readme), encoding="utf-8")
    elif args.check:
        if readme_with(text, readme) != readme:
            print("README.md's Architecture section is out of date: run python tools/architecture.py --write")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
