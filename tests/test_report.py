"""The HTML report: self-contained, every section present, mistakes linked to their explanations; checked in a
real headless browser (Debian's chromium through Playwright) for console errors and section sizes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headstart.api import report
from headstart.cli import app

SECTIONS = ["overview", "metrics", "per-class", "confusion", "calibration", "learning", "mistakes"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "benchmarks" / "out" / "screenshots"


@pytest.fixture(scope="module")
def image_report(small_cnn_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(small_cnn_run, run, symlinks=True)
    return report(run)


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([\w-]+)"', page)


def test_report_is_self_contained_and_has_every_section(image_report):
    page = image_report.read_text()
    assert _sections(page) == SECTIONS
    assert "<script" not in page and "<link" not in page and not re.search(r'(src|href)="https?:', page)
    assert page.count("<svg") >= 4  # confusion, reliability, two learning-curve plots
    assert "before calibration" in page and "95% interval" in page


def test_mistakes_show_thumbnails_linked_to_explanations(image_report):
    page = image_report.read_text()
    mistakes = page[page.index('id="mistakes"'):]
    links = re.findall(r'href="(report_files/[^"]+)"', mistakes)
    assert "data:image/png;base64," in mistakes and links
    assert all((image_report.parent / link).is_file() for link in links)


def test_report_command_on_other_data_and_a_text_model(tiny_text_run, tmp_path):
    table = tiny_text_run.parent / "reviews.csv"
    out = tmp_path / "text.html"
    result = CliRunner().invoke(app, ["report", str(tiny_text_run), "--data", str(table), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert _sections(page) == SECTIONS and "reviews.csv" in page


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (make browser installs Debian's package)")
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[report]')")
    return path


@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_console_errors(image_report):
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(image_report.as_uri())
        boxes = page.eval_on_selector_all(
            "section", "els => els.map(e => [e.id, e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "report-smallcnn.png"), full_page=True)
        browser.close()
    assert errors == []
    assert [b[0] for b in boxes] == SECTIONS and all(w > 0 and h > 0 for _, w, h in boxes), boxes
    assert not overflow  # nothing wider than a laptop screen
