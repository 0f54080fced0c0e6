"""Two machines simulated on one (benchmarks/two_nodes.py): two network namespaces joined by a veth pair, one
torchrun rank on each, the rendezvous on node 0's link address. The probe fit across them must end with the
single process's metrics, each item embedded once; the link shaped by tc must be no faster than its rate.
Skipped, with the reason, where namespaces cannot be made (not root, no iproute2, a container that refuses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HANG_GUARD_S
from .test_distributed import needs_gloo, needs_minilm

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "two_nodes.py"
CANNOT_MAKE_NODES = 77  # two_nodes.py's exit status when it cannot make the namespaces


def _namespaces() -> set[str]:
    if shutil.which("ip") is None:
        return set()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


@needs_gloo
@needs_minilm
def test_a_probe_fit_across_two_nodes_ends_as_one_process_and_the_shaped_link_holds_its_rate(tmp_path):
    before = _namespaces()
    results = tmp_path / "two_nodes.json"
    # 4M float32 = 16 MB per all-reduce: at 1 Gbit/s 128 ms by theory, far more than tbf's 1 MB burst lets through
    # at line speed, so a shaped step cannot take much less than theory.
    run = subprocess.run([sys.executable, str(SCRIPT), "--per-class", "10", "--parameters", "4000000", "--steps", "2",
                          "--rate", "1gbit", "--results", str(results)],
                         capture_output=True, text=True, timeout=HANG_GUARD_S)
    if run.returncode == CANNOT_MAKE_NODES:
        pytest.skip(run.stderr.strip().splitlines()[-1])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert _namespaces() <= before  # both namespaces (and the veth pair inside them) removed

    result = json.loads(results.read_text())
    fit = result["fit"]
    assert fit["same_metrics"] and fit["metrics_two_nodes"] == fit["metrics_one_process"]
    assert fit["metrics_two_nodes"]["n"] == 4  # the test split of 20 items
    # Each of the 20 items embedded once, by one of the nodes, into the shared cache: the single run's items.
    assert fit["embedded"] == fit["embedded_distinct"] == {"one": 20, "two": 20} and fit["same_items_embedded"]

    reduce = result["all_reduce"]
    assert reduce["bare"]["ranks"] == reduce["shaped"]["ranks"] == 2
    assert reduce["ring_theory_s"] == pytest.approx(16e6 * 8 / 1e9)
    # Shaping took hold: no faster than the rate allows past the 1 MB burst (a slow machine only adds time).
    assert min(reduce["shaped"]["step_s"]) >= (16e6 - 1.1e6) * 8 / 1e9
    assert result["commit"] and "| veth, tbf 1gbit |" in result["table"]


def test_the_script_says_why_it_cannot_make_namespaces(tmp_path, monkeypatch):
    """Where namespaces cannot be made the script stops before any work with its skip status and the reason."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import two_nodes
    finally:
        sys.path.remove(str(SCRIPT.parent))
    monkeypatch.setattr(two_nodes.sys, "platform", "linux")
    monkeypatch.setattr(two_nodes.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "argv", ["two_nodes.py", "--results", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit) as stopped:
        two_nodes.main()
    assert stopped.value.code == CANNOT_MAKE_NODES
    assert not (tmp_path / "r.json").exists()
    assert two_nodes.namespaces_unavailable() == "making network namespaces and veth links needs root"
