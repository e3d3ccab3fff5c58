"""The slider page in a real browser (Debian's chromium through Playwright) against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_serve_support import make_kits_dir, served

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS = 300_000


@pytest.fixture(scope="module")
def server(default_model, datasets, tmp_path_factory):
    kits = make_kits_dir(tmp_path_factory.mktemp("kits"), default_model, datasets)
    with served(default_model, kits) as srv:
        yield srv


@contextmanager
def browser_tab() -> Iterator[Any]:
    """A tab of Debian's chromium driven by Playwright (the slider page tests share it)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        tab = browser.new_page()
        tab.set_default_timeout(30_000)  # clicks and selectors; waits for answers use WAIT_MS
        yield tab
        browser.close()


@pytest.fixture(scope="module")
def page(server):
    with browser_tab() as tab:
        yield tab


def wait_done(tab, *panes: str) -> None:
    checks = " && ".join(f"document.getElementById('{p}').dataset.state === 'done'" for p in panes)
    tab.wait_for_function(checks, timeout=WAIT_MS)


def _move_slider(tab, value: float) -> None:
    """A real pointer click on the slider's track at the spot for `value` (range -3..3)."""
    slider = tab.locator(".axis input[type=range]").first
    box = slider.bounding_box()
    assert box is not None
    thumb = 8  # browsers inset the usable track by half the thumb's width
    x = box["x"] + thumb + (box["width"] - 2 * thumb) * (value + 3) / 6
    tab.mouse.click(x, box["y"] + box["height"] / 2)


def test_slider_changes_the_steered_answer_only(server, page) -> None:
    tab = page
    tab.goto(server.url + "/")
    tab.wait_for_selector("body[data-ready=true]")
    tab.select_option("#kit", "happy")
    assert tab.locator(".axis").count() == 1
    assert tab.locator(".axis output").inner_text() == "0.50"  # starts at the card's recommended scale
    band = tab.locator(".axis .band").get_attribute("style") or ""
    assert "left: 41.6" in band  # the recommended range, ±0.5 of ±3, is marked
    tab.fill("#prompt", "Tell me about your weekend.")
    tab.fill("#max-tokens", "10")

    tab.click("#go")
    wait_done(tab, "unsteered", "steered")
    plain, steered = tab.inner_text("#unsteered"), tab.inner_text("#steered")
    assert plain and steered and plain != steered

    _move_slider(tab, -1.0)
    value = float(tab.locator(".axis output").inner_text())
    assert -1.2 < value < -0.8
    wait_done(tab, "steered")  # letting go of the slider re-asks the steered side
    tab.click("#go")
    wait_done(tab, "unsteered", "steered")
    assert tab.inner_text("#unsteered") == plain
    moved = tab.inner_text("#steered")
    assert moved and moved != steered and moved != plain

    tab.hover(".axis .axis-name")
    tip = tab.locator("#card-tip")
    tip.wait_for(state="visible")
    assert "happy vs sad" in tip.inner_text() and "sha256" in tip.inner_text()


def test_kit_shows_one_slider_per_axis(server, page) -> None:
    tab = page
    tab.goto(server.url + "/")
    tab.wait_for_selector("body[data-ready=true]")
    tab.select_option("#kit", "mood")
    names = tab.locator(".axis .axis-name").all_inner_texts()
    assert names == ["happy", "noise"]
    assert tab.locator(".axis output").all_inner_texts() == ["0.60", "0.30"]  # the kit's own scales
