"""The documentation site: it builds with --strict, its API reference shows every public name, each public function
and class says what it is for, and the README's Architecture section matches the code."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import headstart

from .conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_docs_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with --strict into a temporary folder."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stdout + build.stderr
    return out


def test_api_reference_shows_every_public_name(site: Path):
    page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    shown = set(re.findall(r'id="headstart\.([A-Za-z_]+)"', page))
    assert set(headstart.__all__) <= shown, f"missing from the API reference: {set(headstart.__all__) - shown}"


def test_every_page_in_the_nav_is_built(site: Path):
    pages = re.findall(r":\s*([\w-]+)\.md\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert len(pages) >= 10
    for page in pages:
        built = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert built.exists(), page
        assert "readme-section:" not in built.read_text(encoding="utf-8"), f"{page}: an include was not expanded"


def _documented_member(cls, name: str) -> bool:
    """Whether the member `name` has a docstring on `cls` or, when `cls` overrides it without one, on a base class
    (help() shows the base's then; so does the reference, where the override is hidden)."""
    return any(name in c.members and c.members[name].docstring for c in [cls, *cls.mro()])


def test_every_public_function_and_class_says_what_it_is_for():
    """Read statically by griffe, as the API reference reads them (importing the classes would load PyTorch)."""
    griffe = pytest.importorskip("griffe", reason="the docs extra is not installed (pip install -e '.[docs]')")
    package = griffe.load("headstart", search_paths=[str(ROOT / "src")], resolve_aliases=False)
    undocumented = []
    for name in headstart.__all__:
        obj = package[name].final_target if package[name].is_alias else package[name]
        if not (obj.is_function or obj.is_class):
            continue  # __version__
        if not obj.docstring or not obj.docstring.value.strip():
            undocumented.append(name)
        if obj.is_class:
            for member_name, member in obj.all_members.items():
                member = member.final_target if member.is_alias else member
                public = not member_name.startswith("_") and (member.is_function or "property" in member.labels)
                if public and not _documented_member(obj, member_name):
                    undocumented.append(f"{name}.{member_name}")
    assert not undocumented, f"no docstring: {', '.join(undocumented)}"


def test_readme_architecture_section_is_generated_from_the_code():
    assert _tool("architecture").main(["--check"]) == 0, "run: python tools/architecture.py --write"


def test_architecture_rows_follow_the_import_linter_layers():
    architecture = _tool("architecture")
    text = architecture.section()
    layers = architecture.layers()
    assert layers[0] == ["cli"] and layers[-1] == ["errors"]
    rows = re.findall(r"^\| (\d+) \| `([\w_]+)(?:\.py|/)` \|", text, flags=re.MULTILINE)
    assert [(int(n), m) for n, m in rows] == [(n, m) for n, layer in enumerate(layers, 1) for m in layer]


README_FIXTURE = """# tool

Intro.

## Setup

Install it. See [the data page](docs/data.md#splits).

```bash
# a comment, not a heading
make
```

### Details

More.

## Next

Other.
"""


def test_readme_section_include_takes_the_section_and_its_subsections_only():
    hooks = _tool("mkdocs_hooks")
    setup = hooks.readme_section("Setup", README_FIXTURE)
    assert setup.startswith("## Setup\n") and "### Details" in setup and "# a comment" in setup
    assert "## Next" not in setup and "Other." not in setup
    assert hooks.readme_section("tool", README_FIXTURE) == "# tool\n\nIntro.\n"
    with pytest.raises(hooks.ReadmeSectionError, match="no section headed 'Missing'"):
        hooks.readme_section("Missing", README_FIXTURE)


def test_readme_section_include_lifts_headings_and_points_links_at_the_site(monkeypatch, tmp_path: Path):
    hooks = _tool("mkdocs_hooks")
    (tmp_path / "README.md").write_text(README_FIXTURE, encoding="utf-8")
    monkeypatch.setattr(hooks, "README", tmp_path / "README.md")
    page = hooks.include_readme_sections("<!-- readme-section: Setup top=1 -->\n")
    assert page.startswith("# Setup\n") and "\n## Details\n" in page and "# a comment, not a heading" in page
    assert "[the data page](data.md#splits)" in page


def test_api_reference_lists_the_package_names_without_importing_it():
    hooks = _tool("mkdocs_hooks")
    names = hooks.public_names()
    assert names == headstart.__all__
    blocks = hooks.api_reference(names)
    assert blocks.index("::: headstart.fit") < blocks.index("::: headstart.TrainedModel") < blocks.index(
        "::: headstart.__version__")
    assert blocks.count(":::") == len(names)
