"""The architecture's promises: lazy start-up, no modality switches outside the modality modules, one-way
imports, isolated tests, and a backbones table that never cuts a name."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HANG_GUARD_S

SRC = Path(__file__).resolve().parents[1] / "src" / "headstart"


def _imported_after(code: str) -> dict[str, bool]:
    heavy = ("torch", "lightning", "transformers")
    probe = f"{code}\nimport sys, json\nprint(json.dumps({{m: m in sys.modules for m in {heavy!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=HANG_GUARD_S)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_headstart_loads_nothing_heavy():
    assert _imported_after("import headstart") == {"torch": False, "lightning": False, "transformers": False}


def test_help_and_backbones_do_not_import_lightning_or_transformers():
    help_run = _imported_after("from typer.testing import CliRunner\nfrom headstart.cli import app\n"
                               "assert CliRunner().invoke(app, ['--help']).exit_code == 0")
    assert help_run == {"torch": False, "lightning": False, "transformers": False}
    listing = _imported_after("from typer.testing import CliRunner\nfrom headstart.cli import app\n"
                              "assert CliRunner().invoke(app, ['backbones']).exit_code == 0")
    assert not listing["lightning"] and not listing["transformers"]


def test_lazy_attributes_resolve():
    import headstart

    assert set(headstart.__all__) - {"__version__"} == set(headstart._EXPORTS)
    assert callable(headstart.fit) and headstart.FineTune.name == "finetune"
    with pytest.raises(AttributeError):
        headstart.no_such_thing  # noqa: B018


def test_no_modality_switch_outside_the_modality_modules():
    pattern = re.compile(r"modality *(==|!=|in) ")
    found = [f"{path.relative_to(SRC)}:{n}: {line.strip()}" for path in SRC.rglob("*.py")
             if "modalities" not in path.parts
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_imports_point_one_way():
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([str(exe), "--no-cache", "--no-logo"], cwd=SRC.parents[1], capture_output=True, text=True,
                            timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stdout[-3000:]


def test_tests_cannot_reach_the_hub_or_the_real_cache():
    import huggingface_hub.constants as hub

    home = Path.home().resolve()
    assert hub.HF_HUB_OFFLINE is True
    assert not Path(hub.HF_HUB_CACHE).resolve().is_relative_to(home / ".cache")
    assert os.environ["HF_HUB_CACHE"] == hub.HF_HUB_CACHE


def test_backbones_table_never_cuts_a_name(monkeypatch):
    from rich.console import Console
    from typer.testing import CliRunner

    from headstart import cli
    from headstart.backbones import list_backbones

    for width in (60, 80):
        console = Console(width=width, file=io.StringIO(), record=True)
        monkeypatch.setattr(cli, "out_console", console)
        assert CliRunner().invoke(cli.app, ["backbones"]).exit_code == 0
        text = console.export_text()
        for row in list_backbones():
            assert row.name in text, f"{row.name} cut at width {width}:\n{text}"


def test_pretrain_stays_the_function_after_its_package_is_imported():
    out = subprocess.run([sys.executable, "-c", "import headstart\nfrom headstart.pretraining import OBJECTIVES\n"
                          "import headstart.pretraining\nprint(callable(headstart.pretrain), headstart.Pretrained)"],
                         capture_output=True, text=True, check=True, timeout=HANG_GUARD_S)
    assert out.stdout.startswith("True <class 'headstart.pretraining.runner.Pretrained'>")
