"""The benchmark scripts still import and parse their options (issue 26): nothing else runs them in CI, so a
refactor that moves a name they import, or breaks their argument parsers, would otherwise surface only when a
reader runs a command from RESULTS.md. Their full runs stay out of CI (minutes to hours on real data)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))

pytestmark = pytest.mark.benchmarks_smoke


def headstart_imports(script: Path) -> list[tuple[str, str | None, int]]:
    """Every `from headstart... import name` and `import headstart...` in the script, at any depth (many scripts
    import inside the function that needs it, which `--help` never reaches): (module, name or None, line)."""
    found = []
    for node in ast.walk(ast.parse(script.read_text(), str(script))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "headstart":
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.split(".")[0] == "headstart"]
    return found


def test_the_benchmarks_are_found():
    assert {"onnx_speed.py", "selection.py", "serve_load.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_headstart_name_a_benchmark_imports_exists(script):
    missing = []
    for module, name, line in headstart_imports(script):
        try:
            imported = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{script.name}:{line}: import {module}: {e}")
            continue
        if name is not None and not hasattr(imported, name):
            try:  # `from package import submodule`
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{script.name}:{line}: cannot import name {name!r} from {module!r}")
    assert not missing, "\n".join(missing)


# One interpreter for every script (each would otherwise pay torch's import again): run the script as __main__ with
# --help, which executes its top-level imports and builds its parser; argparse then exits 0.
HELP_RUNNER = r"""
import contextlib, io, json, runpy, sys, traceback
results = {}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        results[script] = "returned without printing help"
    except SystemExit as e:
        results[script] = "ok" if e.code in (0, None) and "usage:" in out.getvalue() else f"exit {e.code}"
    except BaseException:
        results[script] = traceback.format_exc(limit=-3)
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def help_results(tmp_path_factory) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCHMARKS.parent / "src"), str(BENCHMARKS)])}
    done = subprocess.run([sys.executable, "-c", HELP_RUNNER, *map(str, SCRIPTS)], capture_output=True, text=True,
                          cwd=tmp_path_factory.mktemp("bench-help"), env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULTS ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(line.removeprefix("RESULTS "))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_benchmark_imports_and_prints_its_help(help_results, script):
    assert help_results[str(script)] == "ok", help_results[str(script)]
