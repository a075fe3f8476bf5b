"""The web page in a real headless Chromium (Debian's package, driven by Playwright).

Skips with its reason when Chromium is absent, unless ``INSPECTNET_REQUIRE_BROWSER=1``
(set by ``.ci/run``), where a missing browser is a failure.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from conftest_serve import running_server, seed_run, toy_images  # noqa: F401 - fixtures
from inspectnet.predict import expand_inputs, make_predictor
from inspectnet.serve.app import create_app

pytestmark = pytest.mark.browser

TOKEN = "browser-token"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    problem = None
    if not Path(exe).exists():
        problem = "Chromium not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright (python) not installed"
    if problem:
        if os.environ.get("INSPECTNET_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (INSPECTNET_REQUIRE_BROWSER=1) but {problem}")
        pytest.skip(problem)
    return exe


def test_upload_verdicts_heatmap_and_csv(seed_run: Path, tmp_path_factory: pytest.TempPathFactory,
                                         tmp_path: Path) -> None:
    exe = _chromium()
    from playwright.sync_api import expect, sync_playwright

    data = toy_images(tmp_path_factory)
    images = [expand_inputs([data / "damaged"])[0], expand_inputs([data / "intact"])[0]]
    pred = make_predictor(seed_run)
    expected = {}
    for r in pred.predict_paths(images):
        status = "review" if r["review"] else "flagged" if r["verdict"] == "damaged" else "intact"
        expected[Path(r["path"]).name] = (r["verdict"], status)

    app = create_app(seed_run, token=TOKEN, predictor=pred)
    with running_server(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            expect(page.locator("#model-line")).to_contain_text("needs an API token")

            page.fill("#token-input", TOKEN)
            page.press("#token-input", "Tab")  # "change" fires on blur: stored, model reloaded
            expect(page.locator("#model-line")).to_contain_text("seed-cnn")
            assert page.evaluate("localStorage.getItem('inspectnet.token')") == TOKEN

            page.set_input_files("#file-input", [str(p) for p in images])
            cards = page.locator(".card")
            expect(cards).to_have_count(2)
            expect(page.locator(".card.pending")).to_have_count(0, timeout=15000)
            for i in range(2):
                card = cards.nth(i)
                name = card.locator(".name").inner_text()
                verdict, status = expected[name]
                assert card.get_attribute("data-status") == status
                assert card.get_attribute("data-verdict") == verdict
                expect(card.locator(".prob")).to_contain_text("p(damaged) = ")
            n_flagged = sum(s == "flagged" for _, s in expected.values())
            expect(page.locator("#summary")).to_contain_text(f"2 inspected, {n_flagged} flagged damaged")

            # Heatmap: a real button, toggled on (fetches cam=true) and off again.
            toggle = cards.nth(0).locator("button.toggle-cam")
            toggle.focus()
            page.keyboard.press("Enter")
            heat = cards.nth(0).locator("img.heatmap")
            expect(heat).to_be_visible(timeout=15000)
            assert heat.get_attribute("src").startswith("data:image/png;base64,")
            expect(toggle).to_have_attribute("aria-pressed", "true")
            toggle.click()
            expect(heat).to_be_hidden()

            with page.expect_download() as dl:
                page.click("#download-csv")
            saved = tmp_path / "results.csv"
            dl.value.save_as(saved)
            with open(saved, newline="") as f:
                rows = list(csv.DictReader(f))
            assert dl.value.suggested_filename == "inspectnet-results.csv"
            assert {r["file"]: (r["verdict"], r["status"]) for r in rows} == expected
            assert set(rows[0]) >= {"file", "status", "verdict", "p_damaged", "threshold"}
            assert not errors, errors
        finally:
            browser.close()
