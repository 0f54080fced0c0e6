"""Issue 12: the report of each run, rendered in headless Chromium (Debian's package, through Playwright): console
errors, the size of every section, and a full-page screenshot for the record in benchmarks/figures/.

  python benchmarks/report_screenshots.py benchmarks/out/runs/c10-lite0-ft benchmarks/out/runs/sst2-minilm-ft
  python benchmarks/report_screenshots.py --smoke   # a one-epoch smallcnn run's report (skips without a browser)
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import _common
from _common import ROOT, add_smoke_option, skip_smoke, start_smoke, table


def render(report: Path, screenshot: Path) -> dict:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(report.resolve().as_uri())
        boxes = page.eval_on_selector_all(
            "section", "els => els.map(e => [e.id, Math.round(e.getBoundingClientRect().height)])")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {"console_errors": errors, "sections": dict(boxes)}


def browser_missing() -> str | None:
    """Why the report cannot be rendered here (None when Playwright and Chromium are both installed)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if shutil.which("chromium") is None:
        return "no chromium on PATH (Debian: apt-get install chromium)"
    return None


def main() -> None:
    from headstart.api import report as write_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run folders (fit --out)")
    add_smoke_option(parser)
    args = parser.parse_args()
    figures = ROOT / "figures"
    if args.smoke:
        folder = start_smoke()
        if browser_missing():
            skip_smoke(browser_missing())
        args.runs, figures = [_common.smoke_run(folder)], folder / "figures"
        figures.mkdir()
    elif not args.runs:
        parser.error("give at least one run folder")
    rows = []
    for run in map(Path, args.runs):
        started = time.perf_counter()
        report = write_report(run)
        seconds = time.perf_counter() - started
        shot = figures / f"report_{run.name}.png"
        result = render(report, shot)
        rows.append({"run": run.name, "report s": round(seconds, 1), "size KB": report.stat().st_size // 1024,
                     "console errors": len(result["console_errors"]),
                     "sections (height px)": ", ".join(f"{k} {v}" for k, v in result["sections"].items()),
                     "screenshot": str(shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot), **{"detail": result}})
        print(table(rows, ["run", "report s", "size KB", "console errors", "sections (height px)", "screenshot"]),
              flush=True)
    _common.write_results("report_screenshots", {"rows": rows})


if __name__ == "__main__":
    main()
