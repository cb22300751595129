"""The after-sales pages in a real browser (Debian's Chromium via Playwright) against the real API
and database: a customer reports a problem and rates its resolution on the public tracking page;
staff see the service page's figures and charts. Screenshots go to a temporary directory; any
console error fails the test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from runtime.settings import Settings
from tests.e2e.fixtures import PUBLIC_TOKEN, running_api, seed_dashboard_world
from tests.integration.stack_helpers import stack_settings

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CARGOTRACE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"browser tests need Debian's chromium at {CHROMIUM} (run `make setup`)", pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def tokens(db: psycopg.Connection) -> dict[str, str]:
    return seed_dashboard_world(db)


@pytest.fixture
def base_url(broker_settings: Settings, database_url: str, tokens: dict[str, str]) -> Iterator[str]:
    with running_api(stack_settings(broker_settings, database_url)) as url:
        yield url


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
    p = context.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    p.on("console", on_console)
    p.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    yield p
    context.close()
    assert problems == [], "the browser reported errors:\n" + "\n".join(problems)


def test_customer_reports_and_rates_then_staff_see_the_service_page(
        page: Page, base_url: str, tokens: dict[str, str], tmp_path: Path) -> None:
    page.goto(f"/track/{PUBLIC_TOKEN}")
    expect(page.locator("body")).to_have_attribute("data-loaded", "track")
    page.get_by_label("What went wrong?").fill("Two jars arrived broken")
    page.get_by_label("Your email").fill("kim@example.com")
    page.get_by_role("button", name="Report a problem").click()
    expect(page.locator("#issue-message")).to_contain_text("we have your report")
    mine = page.get_by_role("list", name="Your requests")
    expect(mine).to_contain_text("Two jars arrived broken")
    expect(mine).to_contain_text("open")
    page.screenshot(path=str(tmp_path / "track-issue.png"), full_page=True)

    staff = {"Authorization": f"Bearer {tokens['operator']}"}
    tickets = httpx.get(f"{base_url}/api/v1/tickets", headers=staff).json()["items"]
    reported = next(t for t in tickets if t["channel"] == "public")
    assert "kim@example.com" not in page.content()  # the customer's own contact is not echoed back
    httpx.patch(f"{base_url}/api/v1/tickets/{reported['id']}", headers=staff,
                json={"status": "resolved", "note": "replacement on its way"}).raise_for_status()

    page.reload()
    rate = page.get_by_role("form", name=f"Rate ticket {reported['id']}")
    rate.get_by_label("Your rating").select_option("4")
    rate.get_by_label("Comment").fill("quick answer")
    rate.get_by_role("button", name="Send rating").click()
    expect(page.locator("#issue-message")).to_contain_text("Thank you for your rating")
    expect(mine).to_contain_text("rated, thank you")
    expect(page.get_by_role("form", name=f"Rate ticket {reported['id']}")).to_have_count(0)  # once only
    page.screenshot(path=str(tmp_path / "track-rated.png"), full_page=True)

    page.goto("/")
    page.get_by_label("API token").fill(tokens["viewer"])
    page.get_by_label("API token").press("Enter")
    expect(page.locator("body")).to_have_attribute("data-loaded", "overview")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Service").click()
    expect(page.locator("body")).to_have_attribute("data-loaded", "service")
    expect(page.get_by_role("region", name="Feedback")).to_contain_text("4 / 5")
    expect(page.get_by_role("region", name="SLA met")).to_contain_text("100 %")
    expect(page.get_by_role("img", name="Tickets by type")).to_be_visible()
    page.screenshot(path=str(tmp_path / "service.png"), full_page=True)
    assert (tmp_path / "service.png").stat().st_size > 10_000
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    saved = tmp_path / "service-report.csv"
    download.value.save_as(saved)
    rows = saved.read_text().splitlines()
    assert rows[0] == "section,key,value" and "summary,mean_feedback,4.0" in rows
