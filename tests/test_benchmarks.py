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


# One interpreter per process for its scripts (each would otherwise pay torch's import again): run each script as
# __main__ with the given option. With --help that executes its top-level imports and builds its parser (argparse
# then exits 0); with --smoke it runs the script's whole path on tiny generated data. The processes take the runs
# from one list as they come free (a run is theirs once they create its claim file): dealt out in advance, one
# process got 110 s of smoke runs and the other 84. (A process per script forked from one that has imported
# everything once was tried and saved nothing: each process here already imports once, the forking one would
# import alone on one core while the other waits, and each fork repeats the lazy imports and first-call set-ups
# that runs in one process share. What remains is the scripts' own fresh processes, `headstart fit` and servers.)
RUNNER = r"""
import contextlib, io, json, os, runpy, sys, traceback
claims, jobs = sys.argv[1], list(zip(sys.argv[2::2], sys.argv[3::2]))
results = {}
for option, script in jobs:
    try:
        os.close(os.open(os.path.join(claims, option + os.path.basename(script)), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        continue  # the other process took it
    sys.argv = [script, option]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        results[f"{option} {script}"] = {"outcome": "returned", "stdout": out.getvalue()}
    except SystemExit as e:
        results[f"{option} {script}"] = {"outcome": f"exit {e.code}", "stdout": out.getvalue()}
    except BaseException:
        results[f"{option} {script}"] = {"outcome": traceback.format_exc(limit=-4), "stdout": out.getvalue()[-2000:]}
print("RESULTS " + json.dumps(results))
"""


def run_benchmarks(jobs: list[tuple[str, Path]], workdir: Path, processes: int = 2) -> dict[str, dict[str, str]]:
    """{"OPTION SCRIPT": {"outcome": "returned" | "exit CODE" | traceback, "stdout": ...}} of each (option, script)
    job, run in the order given; temporary folders (the smoke runs' results) go under `workdir`. `processes`
    interpreters run side by side, one thread each, and share out the jobs: tiny runs are mostly Python overhead,
    which a second thread does not speed up and a second process does."""
    paths = [str(BENCHMARKS.parent / "src"), str(BENCHMARKS), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths),
           "TMPDIR": str(workdir), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    claims = workdir / "claimed"
    claims.mkdir()
    arguments = [str(x) for job in jobs for x in job]
    running = [subprocess.Popen([sys.executable, "-c", RUNNER, str(claims), *arguments],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir, env=env)
               for _ in range(min(processes, len(jobs)))]
    results: dict[str, dict[str, str]] = {}
    for process in running:
        stdout, stderr = process.communicate()
        line = next((x for x in stdout.splitlines() if x.startswith("RESULTS ")), None)
        assert line is not None, stdout[-2000:] + stderr[-4000:]
        results |= json.loads(line.removeprefix("RESULTS "))
    return results


@pytest.fixture(scope="module")
def benchmark_runs(request, tmp_path_factory) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The --help runs and the smoke runs of the scripts this session tests, in the same two processes (each pays
    its imports once, not once per option), and the files under benchmarks/out they changed. The --help runs go
    first, so that each reads a script before any smoke run has changed the process's state."""
    items = request.session.items
    wanted = {name for item in items for name in ("help_results", "smoke_results")
              if name in getattr(item, "fixturenames", ())}
    # Only the scripts this session runs the smoke test of (`-k serve_load` runs one script, not all of them).
    chosen = {item.callspec.params["name"] for item in items
              if getattr(item, "originalname", "") == "test_every_benchmark_runs_in_its_smoke_mode"} or set(SMOKE)
    smoke = sorted((name for name in SMOKE if name in chosen), key=lambda name: (
        LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST), name))
    jobs = [("--help", script) for script in SCRIPTS if "help_results" in wanted]
    jobs += [("--smoke", BENCHMARKS / f"{name}.py") for name in smoke if "smoke_results" in wanted]
    out = BENCHMARKS / "out"
    before = {p: p.stat().st_mtime for p in out.rglob("*")} if out.is_dir() else {}
    results = run_benchmarks(jobs, tmp_path_factory.mktemp("bench-runs"))
    after = {p: p.stat().st_mtime for p in out.rglob("*")} if out.is_dir() else {}
    return results, [str(p) for p in after if before.get(p) != after[p]]


@pytest.fixture(scope="module")
def help_results(benchmark_runs) -> dict[str, dict[str, str]]:
    return {key.removeprefix("--help "): result for key, result in benchmark_runs[0].items() if key.startswith("--help ")}


@pytest.fixture(scope="module")
def smoke_results(benchmark_runs) -> tuple[dict[str, dict[str, str]], list[str]]:
    results, touched = benchmark_runs
    return {key.removeprefix("--smoke "): result for key, result in results.items() if key.startswith("--smoke ")}, touched


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_benchmark_imports_and_prints_its_help(help_results, script):
    result = help_results[str(script)]
    assert result["outcome"] in ("exit 0", "exit None"), result["outcome"]
    assert "usage:" in result["stdout"]


# Every script has a smoke mode: its whole path in seconds on generated data. Two of those run here need something
# outside the project; where it is absent here their smoke run says so (_common.skip_smoke) and the test skips with
# that reason, and where it is present they run for real. The side install of setfit counts when it is on PYTHONPATH.
# A script whose whole path another test module already runs is left out of the smoke runs here (its smoke mode
# would only repeat that run, smaller, for most of a minute of the suite's time): two_nodes, which also needs
# network namespaces.
RUN_BY_OTHER_TESTS = {"two_nodes": "tests/test_two_nodes.py"}
SMOKE = sorted(p.stem for p in SCRIPTS if p.stem not in RUN_BY_OTHER_TESTS)
# The smoke runs that take longest (most start processes of their own), started first so that the two processes
# end together: in order of name the last one started could run on alone for a quarter of a minute. Order only.
LONGEST_FIRST = ["probe_scaling", "classic_recipe", "extraction_processes", "serve_load", "tasks_accuracy",
                 "lora_vs_finetune", "audio_label_efficiency", "serve_soak", "shards_memory", "startup_latency"]
NEEDS_OUTSIDE = {
    "setfit_reference": "the setfit package, installed in a side folder, not in the test environment",
    "report_screenshots": "playwright and a chromium browser",
}


def test_every_benchmark_has_a_smoke_mode(help_results):
    assert [s.name for s in SCRIPTS if "--smoke" not in help_results[str(s)]["stdout"]] == []


@pytest.mark.parametrize("name", sorted(RUN_BY_OTHER_TESTS))
def test_a_script_left_out_of_the_smoke_runs_is_run_by_its_own_test_module(name):
    module = BENCHMARKS.parent / RUN_BY_OTHER_TESTS[name]
    assert (BENCHMARKS / f"{name}.py").is_file() and f'"{name}.py"' in module.read_text()


@pytest.mark.parametrize("name", SMOKE)
def test_every_benchmark_runs_in_its_smoke_mode(smoke_results, name):
    results, _ = smoke_results
    result = results[str(BENCHMARKS / f"{name}.py")]
    assert result["outcome"] in ("returned", "exit 0", "exit None"), result["outcome"] + result["stdout"]
    skipped = [line for line in result["stdout"].splitlines() if line.startswith("smoke run skipped:")]
    if skipped:
        assert name in NEEDS_OUTSIDE, f"{name} skipped its smoke run: {skipped[0]}"
        pytest.skip(f"{name}: {skipped[0]} (needs {NEEDS_OUTSIDE[name]})")
    assert "smoke run: tiny generated data" in result["stdout"]
    assert "wrote " in result["stdout"]


def test_a_smoke_run_never_writes_to_the_real_results(smoke_results):
    _, touched = smoke_results
    assert not touched
