"""The dashboard and the public tracking page in a real browser: Debian's Chromium driven by
Playwright, against the real API (uvicorn), PostgreSQL+TimescaleDB, Mosquitto and an ingest worker.

Every view is photographed at 1280 and 390 px into a temporary directory (set
CARGOTRACE_SCREENSHOT_DIR=docs/img to refresh the README's pictures); at 390 px the page must not
scroll sideways. Any console error or uncaught exception fails the test, and so does an API token
in any URL the browser requests (the event stream uses a short-lived ticket).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from runtime.settings import Settings
from tests.e2e.fixtures import PUBLIC_TOKEN, SHIPMENT, running_api, seed_dashboard_world
from tests.integration.stack_helpers import device, provision, running_worker, stack_settings, wait_until
from tests.integration.world import GTIN_B, gs1

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CARGOTRACE_CHROMIUM", "/usr/bin/chromium")
# What the machine allows: no sandbox as root, and nothing that phones home (the network is closed).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# A test run must not rewrite the repository's pictures; a person refreshing them sets the variable.
SHOTS = Path(os.environ.get("CARGOTRACE_SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "cargotrace-screenshots")
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"browser tests need Debian's chromium at {CHROMIUM} (run `make setup`)", pytrace=False)
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def settings(broker_settings: Settings, database_url: str, db: psycopg.Connection) -> Settings:
    return stack_settings(broker_settings, database_url)


@pytest.fixture
def tokens(db: psycopg.Connection) -> dict[str, str]:
    return seed_dashboard_world(db)


@pytest.fixture
def base_url(settings: Settings, tokens: dict[str, str]) -> Iterator[str]:
    with running_api(settings) as url:
        yield url


@pytest.fixture
def page(browser: Browser, base_url: str, tokens: dict[str, str]) -> Iterator[Page]:
    context = browser.new_context(base_url=base_url, viewport=WIDE, reduced_motion="reduce")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    yield page
    leaked = [url for url in urls if any(token in url for token in tokens.values())]
    assert leaked == [], f"an API token appeared in a URL: {leaked}"
    assert any("ticket=st_" in url for url in urls) or not any("/events/stream" in url for url in urls)
    # Closing the page first ends its event stream, so the server stops without waiting for it.
    context.close()
    assert problems == [], "the browser reported errors:\n" + "\n".join(problems)


def sign_in(page: Page, token: str) -> None:
    page.goto("/")
    field = page.get_by_label("API token")
    expect(field).to_be_focused()  # the form is ready for the keyboard at once
    field.fill(token)
    field.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-live", "live")
    expect(page.locator("body")).to_have_attribute("data-loaded", "overview")


def open_view(page: Page, name: str, view: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()
    expect(page.locator("body")).to_have_attribute("data-loaded", view)


def shoot(page: Page, name: str) -> None:
    """Screenshots at both widths; at the phone width nothing may stick out sideways."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"dashboard-{name}-1280.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(100)  # layout settles
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px at 390px"
    page.screenshot(path=str(SHOTS / f"dashboard-{name}-390.png"), full_page=True)
    page.set_viewport_size(WIDE)


def test_sign_in_overview_and_stock_of_the_seeded_world(page: Page, tokens: dict[str, str]) -> None:
    page.goto("/")
    shoot(page, "sign-in")
    sign_in(page, tokens["viewer"])
    cards = page.locator(".cards")
    expect(cards.get_by_role("region", name="Open alarms")).to_contain_text("1 critical")
    # a lot_expiring warning (CONTRACT 3.3) for L2, which expires within 30 days
    expect(cards.get_by_role("region", name="Open alarms")).to_contain_text("2 warning")
    expect(cards.get_by_role("region", name="Shipments")).to_contain_text("1 in transit")
    expect(cards.get_by_role("region", name="Devices")).to_contain_text("4 online")
    shoot(page, "overview")

    open_view(page, "Stock", "stock")
    table = page.locator("#stock-table table")
    # DOCK-1 keeps 4 SKU-A L1, 12 SKU-A L2 (expiring within 30 days) and 4 SKU-B; BIN-A1 6 SKU-B; BIN-A2 20 SKU-A L1.
    expect(table.get_by_role("rowheader", name="Location BIN-A2 · total 20")).to_be_visible()
    dock_l2 = table.locator("tr", has_text="L2")
    expect(dock_l2).to_contain_text("12")
    expect(dock_l2.locator(".badge.warn")).to_be_visible()  # the expiry is close
    shoot(page, "stock")

    page.get_by_label("Item (SKU)").fill("SKU-B")
    page.get_by_label("Group by").select_option("sku")
    page.get_by_role("button", name="Apply").click()
    expect(table.get_by_role("rowheader")).to_have_text(["Item SKU-B · total 10"])  # 4 at DOCK-1 + 6 at BIN-A1
    expect(table.locator("tbody tr:not(.group-row)")).to_have_count(2)


def test_operator_acknowledges_an_alarm_with_the_keyboard(page: Page, tokens: dict[str, str],
                                                          db: psycopg.Connection) -> None:
    sign_in(page, tokens["operator"])
    # Keyboard only: Tab from the top of the page reaches the navigation.
    page.locator("body").focus()
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Alarms":
            break
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-loaded", "alarms")
    row = page.locator("tr[data-id]", has_text="cold room above 8 °C")
    expect(row).to_have_attribute("data-ack", "no")

    row.get_by_role("button", name="Acknowledge").focus()
    page.keyboard.press("Enter")
    note = row.get_by_label("Note")
    expect(note).to_be_focused()
    page.keyboard.type("door closed, probe checked")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Confirm acknowledgement
    row = page.locator("tr[data-id]", has_text="cold room above 8 °C")
    expect(row).to_have_attribute("data-ack", "yes")
    expect(row).to_contain_text("door closed, probe checked")
    stored = db.execute("SELECT acknowledged, ack_note, ack_by FROM alarms WHERE subject = 'ENV-1'").fetchone()
    assert stored == (True, "door closed, probe checked", "desk-operator")
    shoot(page, "alarms")

    # The change made elsewhere (here: SQL, like ingest clearing it) arrives live.
    db.execute("UPDATE alarms SET state = 'cleared', cleared_at = now() WHERE subject = 'SC-2'")
    expect(page.locator("tr[data-id]", has_text="SC-2 silent")).to_have_count(0)  # filter: active only


def test_viewer_sees_no_acknowledge_button(page: Page, tokens: dict[str, str]) -> None:
    sign_in(page, tokens["viewer"])
    open_view(page, "Alarms", "alarms")
    expect(page.locator("tr[data-id]")).to_have_count(3)  # with L2's lot_expiring
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)


def test_device_health(page: Page, tokens: dict[str, str]) -> None:
    sign_in(page, tokens["viewer"])
    open_view(page, "Devices", "devices")
    expect(page.locator("tr[data-id=TRK-1]")).to_contain_text("online")
    expect(page.locator("tr[data-id=TRK-1]")).to_contain_text("76 %")
    expect(page.locator("tr[data-id=SC-2]")).to_contain_text("offline")
    expect(page.locator("tr[data-id=SC-1]")).to_contain_text("31 %")
    shoot(page, "devices")


def test_a_scan_published_over_mqtt_appears_live(page: Page, tokens: dict[str, str], settings: Settings,
                                                 db: psycopg.Connection) -> None:
    creds = provision(settings, db, kind="scanner", prefix="desk-scanner")
    db.execute("UPDATE devices SET site = 'DC1', location = 'DOCK-1', mode = 'receive' WHERE device_id = %s",
               (creds.device_id,))
    sign_in(page, tokens["viewer"])
    open_view(page, "Movements", "movements")
    rows = page.locator("#movements-table tbody tr")
    before = rows.count()
    with running_worker(settings), device(creds, settings) as scanner:
        scanner.publish("scan", {"msg_id": "desk-1", "code": gs1(GTIN_B), "qty": 7})
        fresh = page.locator("#movements-table tbody tr.fresh", has_text=creds.device_id)
        expect(fresh).to_contain_text("SUP-ACME → DOCK-1")
        expect(fresh).to_contain_text("7")
        expect(rows).to_have_count(before + 1)
        expect(page.locator("#announcer")).to_contain_text("New movement: 7 × SKU-B")
        wait_until(lambda: db.execute("SELECT count(*) FROM movements WHERE msg_id = 'desk-1'").fetchone() == (1,),
                   what="the movement in the ledger")
    shoot(page, "movements")
    open_view(page, "Overview", "overview")
    expect(page.locator("#movements-today")).to_have_text("1")  # seeded movements are from 2026-11-20


def test_shipment_route_map_and_temperature_chart(page: Page, tokens: dict[str, str]) -> None:
    sign_in(page, tokens["viewer"])
    open_view(page, "Shipments", "shipments")
    shoot(page, "shipments")
    page.get_by_role("link", name=SHIPMENT).click()
    expect(page.locator("body")).to_have_attribute("data-loaded", "shipments")
    expect(page.get_by_role("heading", name=f"Shipment {SHIPMENT}")).to_be_visible()
    expect(page.locator("#shipment-status")).to_contain_text("in transit")
    expect(page.get_by_role("list", name="Status timeline")).to_contain_text("left the DC1 yard")

    route = page.get_by_role("img", name=f"Route of shipment {SHIPMENT}")
    expect(route.locator("polyline.route-line")).to_have_attribute("data-points", "21")
    expect(route.locator("polygon.fence-origin")).to_have_count(1)
    expect(route.locator("polygon.fence-destination")).to_have_count(1)

    chart = page.get_by_role("img", name=f"Temperature of shipment {SHIPMENT} (sensor TS-1)")
    expect(chart.locator("rect.band")).to_have_count(1)
    expect(chart.locator("rect.excursion")).to_have_count(1)
    expect(chart.locator("polyline.temp-line")).to_be_visible()
    expect(page.locator("#temperature-chart figcaption")).to_contain_text("1 excursion")
    shoot(page, "shipment")


def test_public_tracking_page_without_signing_in(page: Page) -> None:
    page.goto(f"/track/{PUBLIC_TOKEN}")
    expect(page.locator("body")).to_have_attribute("data-loaded", "track")
    expect(page.locator("#track-status")).to_have_text("On the way")
    expect(page.get_by_role("list", name="Progress").locator("[aria-current=step]")).to_have_text("On the way")
    expect(page.locator("#track-eta")).not_to_have_text("not known yet")
    # Nothing internal: no vehicle, device or place names reach the customer.
    body = page.locator("main").inner_text()
    for internal in ("TRUCK-1", "TRK-1", "TS-1", "DC1", "GF-CUST"):
        assert internal not in body
    shoot(page, "tracking")
