"""The search page in a real browser: Debian's chromium, headless, driven by playwright over real HTTP.

Pick a user, search, see block cards with docs, click a doc (posted to /events), see the page search again
with a ranking that reacted to the click.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def new_request(page: Any, request_id: str | None) -> None:
    """Wait until the page shows the answer to another search than ``request_id``."""
    assert request_id, "the page shows no request id"
    page.wait_for_selector(
        f"#status[data-request-id]:not([data-request-id='{request_id}'])", state="attached"
    )


@pytest.mark.slow
def test_search_page_click_reranks(app_factory: Callable[..., FastAPI], live_server: Callable) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (CI installs Debian's: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

    with live_server(app_factory()) as live, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            # The page's Content-Security-Policy admits its own inline script and style by hash: any
            # violation (a stale hash) shows on the console and would stop the page.
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            page.goto(live.url + "/")
            # Waits go through playwright's selector engine: a predicate string polled in the page is eval,
            # which the page's CSP refuses (script-src has no 'unsafe-eval'), so it failed whenever it polled.
            page.wait_for_selector("#user option", state="attached")
            page.select_option("#user", index=1)
            page.fill("#query", "jeju island")
            page.click("button[type=submit]")
            page.wait_for_selector(".card")
            cards = page.locator(".card")
            assert cards.count() == 10
            assert cards.first.locator("a.doc").count() >= 1
            first_request = page.get_attribute("#status", "data-request-id")

            # Click the first doc of the last block several times: each click posts a click and a dwell, and
            # the page searches again; the clicked block's features (and so its score) change.
            last = cards.nth(9)
            block_id = last.get_attribute("data-block-id")
            before = float(last.get_attribute("data-score") or "nan")
            with page.expect_response(lambda r: r.url.endswith("/events") and r.status == 202):
                last.locator("a.doc").first.click()
            new_request(page, first_request)
            selector = f".card[data-block-id='{block_id}']"

            def score_now() -> float | None:
                card = page.locator(selector)
                return float(card.get_attribute("data-score") or "nan") if card.count() else None

            # The stream consumer applies the click within a moment; search again until the page shows it.
            deadline = time.monotonic() + 15
            while score_now() == before and time.monotonic() < deadline:
                shown = page.get_attribute("#status", "data-request-id")
                page.click("button[type=submit]")
                new_request(page, shown)
                time.sleep(0.3)
            # The ranking reacted: the clicked block scores differently now (or left the top 10).
            assert score_now() != before
            assert not [m for m in console if "Content Security Policy" in m], console
        finally:
            browser.close()
