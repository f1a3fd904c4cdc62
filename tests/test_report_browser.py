"""The report page in a real headless browser: it loads from disk with no console error and no
request but its own file, shows the verdict, the accuracy and the plots, and a screenshot is taken.

One page comes from a real `icm label --report` run of the embedded model on 64 shipped tweets (a
small core, so most rows are labelled by transfer, held out from the search), then `icm report`
with their gold; the other from the runner over the keyword backend, which needs no model.

Chromium: Debian's `chromium-headless-shell` (or `chromium`), which `make test` installs, driven by
Playwright (pip) through its executable_path; ICM_CHROMIUM names another binary. Without one the
tests skip, and fail under ICM_REQUIRE_BROWSER=1 (as `make test` sets).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from report_fixtures import fake_run

ROOT = Path(__file__).resolve().parents[1]
DATA, GOLD = ROOT / "examples" / "tweets-64.jsonl", ROOT / "examples" / "tweets-64.gold.jsonl"
# Chromium's own traffic (updates, sync, field trials) stays off, and the profile is a fresh,
# empty directory (Playwright makes one per launch): only the page's requests can appear.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


def chromium() -> Optional[str]:
    for name in (os.environ.get("ICM_CHROMIUM"), "chromium-headless-shell", "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def unavailable(reason: str) -> None:
    if os.environ.get("ICM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ICM_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install 'icm-cli[test]')")
    binary = chromium()
    if binary is None:
        unavailable("no Chromium (apt-get install chromium-headless-shell, or set ICM_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, headless=True, args=ARGS)
        yield b
        b.close()


def open_page(browser: Any, page_file: Path, shot: Path) -> tuple[Any, list[str], list[str], float]:
    """Load the file; returns the page, every request it made, every console message or page
    error, and the seconds to the load event. Anything not file:// is refused, not fetched."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    start = time.monotonic()
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    seconds = time.monotonic() - start
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("ICM_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)
    return page, requests, problems, seconds


def check_page(page: Any, requests: list[str], problems: list[str], page_file: Path, shot: Path,
               plots: int) -> None:
    assert requests == [page_file.resolve().as_uri()]
    assert problems == []
    verdict = page.locator(".verdict")
    assert verdict.is_visible() and verdict.inner_text() in ("signal", "weak", "none")
    sizes = page.eval_on_selector_all("figure svg", "els => els.map(e => [e.getBoundingClientRect().width, "
                                                    "e.getBoundingClientRect().height])")
    assert len(sizes) == plots and all(w > 200 and h > 100 for w, h in sizes), sizes
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_a_page_from_the_runner_opens_with_no_error_and_no_request(browser, tmp_path):
    labels, gold = fake_run(tmp_path)
    page_file = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "icm_cli.cli", "report", str(labels), "--gold", str(gold), "-o",
                           str(page_file)], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    shot = tmp_path / "report-keyword-backend.png"
    page, requests, problems, _ = open_page(browser, page_file, shot)
    check_page(page, requests, problems, page_file, shot, plots=8)
    assert "accuracy against" in page.locator("#gold").inner_text()


# ---- the real model: one small labelling run, shared by the tests below


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`icm label --report` on 64 tweets, the core kept small (about 10 tweets) so that the search
    is short and most rows are transferred: held out from the search, as rows of a real run are."""
    out = tmp_path_factory.mktemp("real") / "tweets-64.labels.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "icm_cli.cli", "label", str(DATA), "-c", str(ROOT / "configs" / "tweets-sentiment.yaml"),
         "--set", "core.max_tokens=400", "--iterations", "30", "-o", str(out), "--report"],
        capture_output=True, timeout=1500, cwd=ROOT)
    return out, result


@pytest.mark.model
def test_label_report_writes_the_page_beside_out(labelled_run):
    out, result = labelled_run
    assert result.returncode == 0, result.stderr.decode()
    page = out.with_name(out.name + ".report.html").read_text(encoding="utf-8")
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["transfer_rows"] >= 32 and summary["readings"] is not None and summary["search_trace"]
    for section in ("run", "signal", "confidence", "readings", "search", "rows"):
        assert f'<section id="{section}">' in page
    assert 'id="gold"' not in page  # icm label has no gold to give it
    assert "report: " in result.stderr.decode()


@pytest.mark.model
def test_a_real_run_with_gold_opens_in_chromium_showing_verdict_accuracy_and_plots(browser, labelled_run, tmp_path):
    out, result = labelled_run
    assert result.returncode == 0, result.stderr.decode()
    page_file = tmp_path / "tweets-64.report.html"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "icm_cli.cli", "report", str(out), "--gold", str(GOLD), "-o",
                           str(page_file)], capture_output=True, timeout=300)
    build = time.monotonic() - start
    assert done.returncode == 0, done.stderr.decode()
    shot = tmp_path / "report-tweets-64.png"
    page, requests, problems, load = open_page(browser, page_file, shot)
    check_page(page, requests, problems, page_file, shot, plots=8)
    gold = page.locator("#gold").inner_text()
    assert "accuracy against" in gold and "95% interval" in gold and "on 64 rows" in gold
    print(f"\nreport: {page_file.stat().st_size:,} bytes, built in {build:.1f} s, loaded in {load:.2f} s")
