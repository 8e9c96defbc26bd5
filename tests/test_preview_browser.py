"""The card preview in a real headless browser (Debian's chromium, driven by Playwright): for
each kind of fixture, choose it, show its cards, check they render as an EHR shows them, and
keep a screenshot (test-artifacts/preview/); then dismiss a card with a reason and find the
override in /stats/cards. Under CI a missing browser fails the test rather than skipping it:
scripts/test installs chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ipt_cds.http.app import create_app
from ipt_cds.ops.config import Settings

from .serving import serving

# Left out of scripts/test --quick: A headless browser starts.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "preview"
# One fixture per kind of answer: a critical card, a warning with links, an info card with an
# order to suggest, a replacement (delete and create), and no card at all.
KINDS = {
    "critical": ("in-suicide-item9-two-ipt", "critical"),
    "warning": ("in-suicide-item9-one-ipt", "warning"),
    "info-order": ("in-summary-suitable-phq9", "info"),
    "replacement": ("in-teen-16-ipt-sign", "info"),
    "no-card": ("out-psychosis-cbt-draft-only", None),
}


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no chromium: scripts/test installs it (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("preview")
    settings = Settings(database_url=f"sqlite:///{folder / 'store.sqlite3'}", log_level="WARNING")
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_of_card_renders_in_a_browser(browser: object, base_url: str, kind: str) -> None:
    fixture, indicator = KINDS[kind]
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base_url}/preview")
    page.select_option("#fixture", fixture)
    page.click("#show")
    page.wait_for_load_state()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{kind}.png"), full_page=True)
    cards = page.locator("div.card")
    if indicator is None:
        assert cards.count() == 0
        assert "0 cards" in page.inner_text("h2")
    else:
        first = cards.first
        assert first.get_attribute("data-indicator") == indicator
        assert first.locator(".summary").inner_text().strip()
        # The detail is rendered Markdown, not shown as source.
        assert first.locator("p strong").count() > 0
        assert "**" not in first.inner_text()
        # Only the badge and the border carry the indicator's colour; the text stays dark.
        text = first.locator("p").nth(1).evaluate("e => getComputedStyle(e).color")
        assert text == "rgb(27, 27, 27)", text
        border = first.evaluate("e => getComputedStyle(e).borderLeftColor")
        assert border != "rgb(136, 136, 136)", "the indicator's colour, not the default grey"
    assert errors == [], f"no console errors (a CSP violation would be one): {errors}"
    page.close()


def test_dismiss_with_a_reason_reaches_the_statistics(browser: object, base_url: str) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{base_url}/preview")
    page.select_option("#fixture", "in-suicide-item9-one-ipt")
    page.click("#show")
    card = page.locator('div.card[data-rule="ipt-suicide-risk"]')
    reason = card.locator("select[name=reason] option").nth(1).get_attribute("value")
    card.locator("select[name=reason]").select_option(reason)
    card.locator("button.dismiss").click()
    page.wait_for_selector("#notice")
    assert page.inner_text("#notice") == "Feedback stored."
    page.close()
    stats = httpx.get(f"{base_url}/stats/cards").json()
    rows = [r for s in stats["services"] for r in s["rules"] if r["rule"] == "ipt-suicide-risk"]
    assert sum(r["overridden"] for r in rows) == 1
    reasons = [c for r in rows for c in r.get("overrideReasons", [])]
    assert any(reason and reason.startswith(c["code"]) for c in reasons), reasons
