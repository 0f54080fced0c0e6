"""The HTML report: self-contained, every section present, mistakes linked to their explanations; checked in a
real headless browser (Debian's chromium through Playwright) for console errors and section sizes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from headstart.api import report
from headstart.cli import app

from .conftest import make_tiny_bert

SECTIONS = ["overview", "metrics", "per-class", "confusion", "calibration", "learning", "mistakes"]
MULTILABEL_SECTIONS = ["overview", "metrics", "per-label", "co-occurrence", "calibration", "learning", "mistakes"]
REGRESSION_SECTIONS = ["overview", "metrics", "per-target", "scatter", "calibration", "learning", "mistakes"]
# Label and target names a page must escape (they come from the user's table).
TAGS = {"<sea>": ["waves", "ocean", "beach"], "sun&set": ["orange", "dusk", "glow"], "tree": ["forest", "leaf", "oak"]}
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


def _section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}"')
    return page[start:page.index("</section>", start)]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="module")
def multilabel_run(tiny_bert, tmp_path_factory) -> Path:
    """A probe on 300 texts with one or two of three tags each, two of them named with HTML's special characters."""
    import headstart

    root = tmp_path_factory.mktemp("multilabel")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        tags = list(rng.choice(list(TAGS), size=rng.integers(1, 3), replace=False))
        rows.append({"text": " ".join(rng.choice(TAGS[t]) for t in tags) + f" picture {i}", "label": "|".join(tags)})
    pd.DataFrame(rows).to_csv(root / "tags.csv", index=False)
    headstart.fit(root / "tags.csv", str(tiny_bert), "probe", out=root / "run", task="multilabel", val_size=100,
                  test_size=80, max_length=32, cache=False)
    return root / "run"


@pytest.fixture(scope="module")
def regression_run(tiny_bert, tmp_path_factory) -> Path:
    """A probe on 300 texts scored on two targets, one named with HTML's special characters."""
    import headstart

    root = tmp_path_factory.mktemp("regression")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        valence, arousal = rng.normal(size=2)
        text = "happy " * (1 + int(abs(valence) * 2)) if valence > 0 else "sad " * (1 + int(abs(valence) * 2))
        rows.append({"text": f"{text}{'calm' if arousal < 0 else 'wild'} {i}", "valence": round(3 + valence, 3),
                     "<arousal>": round(3 + arousal, 3)})
    pd.DataFrame(rows).to_csv(root / "scores.csv", index=False)
    headstart.fit(root / "scores.csv", str(tiny_bert), "probe", out=root / "run", task="regression",
                  target="valence,<arousal>", val_size=100, test_size=80, max_length=32, cache=False)
    return root / "run"


def test_multilabel_report_shows_per_label_results_and_co_occurrence(multilabel_run):
    page = report(multilabel_run).read_text()
    assert _sections(page) == MULTILABEL_SECTIONS
    assert "<sea>" not in page and "sun&set" not in page  # label names escaped, in tables and in the SVG
    assert "&lt;sea&gt;" in page and "sun&amp;set" in page
    assert re.search(r'class="subtitle">macro F1 0\.\d+, mAP 0\.\d+ on 80 items', page)
    metrics = _section(page, "metrics")
    for name in ("mean average precision (mAP)", "macro F1", "micro F1", "subset accuracy", "Hamming loss"):
        assert name in metrics
    per_label = _section(page, "per-label")
    assert all(f"<th>{h}</th>" in per_label for h in ("precision", "recall", "F1", "AP", "threshold", "support"))
    assert per_label.count("<tr>") == 1 + len(TAGS)  # the header and one row per label
    assert "<svg" in _section(page, "co-occurrence")
    calibration = _section(page, "calibration")
    assert "<th>temperature</th>" in calibration and "<th>threshold</th>" in calibration
    assert "thresholds tuned for" in calibration  # the manifest's record, not a classification temperature
    assert "for classification models; this model is multilabel" in _section(page, "mistakes")
    assert not (multilabel_run / "report_files").exists()  # no explanations attempted


def test_regression_report_shows_per_target_errors_scatter_and_intervals(regression_run):
    page = report(regression_run).read_text()
    assert _sections(page) == REGRESSION_SECTIONS
    assert "<arousal>" not in page and "&lt;arousal&gt;" in page
    assert re.search(r'class="subtitle">R² -?\d\.\d+, Pearson r -?\d\.\d+ \(mean over 2 targets\)', page)
    per_target = _section(page, "per-target")
    assert all(f"<th>{h}</th>" in per_target for h in ("MAE", "RMSE", "R²", "Pearson r", "Spearman r",
                                                       "interval coverage", "interval width"))
    scatter = _section(page, "scatter")
    assert scatter.count("<svg") == 1 and "true valence" in scatter and "true &lt;arousal&gt;" in scatter
    calibration = _section(page, "calibration")
    assert "split conformal intervals for 90% coverage" in calibration
    assert "<th>coverage (validation)</th>" in calibration and calibration.count("<tr>") == 3
    assert "for classification models; this model is regression" in _section(page, "mistakes")


def test_explain_refuses_a_multilabel_model_in_one_line(multilabel_run):
    result = CliRunner().invoke(app, ["explain", str(multilabel_run / "model"), "ocean waves"])
    _assert_one_line_error(result, "explanations are for classification models; this model is multilabel "
                                   "(not supported yet)")


def test_distill_refuses_a_regression_teacher_in_one_line(regression_run, tmp_path):
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text("happy wild\nsad calm\n")
    result = CliRunner().invoke(app, ["distill", str(regression_run), str(unlabeled), "--out", str(tmp_path / "s")])
    _assert_one_line_error(result, "distill's teacher must be a classification model; this one is regression")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("strategy", ["auto", "contrastive"])
@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_classification_only_strategies_refuse_other_tasks_in_one_line(strategy, task, tmp_path):
    result = CliRunner().invoke(app, ["fit", str(tmp_path / "any.csv"), "--strategy", strategy, "--task", task,
                                      "--out", str(tmp_path / "run")])
    _assert_one_line_error(result, f"--strategy {strategy} trains classification only, not --task {task} "
                                   "(not supported yet)")
    assert not (tmp_path / "run").exists()


def _assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert message in " ".join(result.stderr.split()), result.stderr


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
