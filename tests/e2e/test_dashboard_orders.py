"""The orders and replenishment views in a real browser (Chromium via Playwright) against the real
API, database and broker; screenshots at 1280 and 390 px go to a temporary directory."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_dashboard import PHONE, WIDE, base_url, browser, page, playwright, settings, sign_in, tokens
from tests.integration.world import GTIN_A, apply, gs1, scan

pytestmark = pytest.mark.integration
__all__ = ["base_url", "browser", "page", "playwright", "settings", "tokens"]  # fixtures shared with the dashboard


def shoot(page: Page, out: Path, name: str) -> None:
    page.screenshot(path=str(out / f"dashboard-{name}-1280.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(100)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px at 390px"
    page.screenshot(path=str(out / f"dashboard-{name}-390.png"), full_page=True)
    page.set_viewport_size(WIDE)


def test_orders_and_replenishment_views(page: Page, tokens: dict[str, str], base_url: str, db: psycopg.Connection,
                                        tmp_path: Path) -> None:
    with httpx.Client(base_url=f"{base_url}/api/v1", headers={"Authorization": f"Bearer {tokens['operator']}"},
                      timeout=10) as api:
        lines = [{"sku": "SKU-A", "qty": 25}, {"sku": "SKU-B", "qty": 2}]
        assert api.put("/orders/SO-WEB", json={"customer": "CUST-1", "site": "DC1", "lines": lines,
                                                 "priority": 2}).status_code == 201
        released = api.post("/orders/SO-WEB/release", json={"device": "SC-2"}).json()
    assert released["status"] == "backordered"  # 20 of SKU-A on the shelves, 25 ordered
    # a wrong-bin scan on the task: refused, shown on the order
    apply(db, [scan("SC-2", "web-1", gs1(GTIN_A, lot="L1", expiry="271231"), 30, mode="pick", location="BIN-A1",
                    qty=20)])
    db.execute("UPDATE items SET reorder_point = 30, reorder_qty = 24, lead_time_days = 2 WHERE sku = 'SKU-A'")
    apply(db, [scan("SC-2", "web-2", gs1(GTIN_A, lot="L1", expiry="271231"), 31, mode="pick", location="BIN-A2",
                    qty=20)])  # the right bin: picked, and the stock left drops below the reorder point

    sign_in(page, tokens["viewer"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Orders").click()
    expect(page.locator("body")).to_have_attribute("data-loaded", "orders")
    row = page.get_by_role("row").filter(has_text="SO-WEB")
    expect(row).to_contain_text("picking")  # the SKU-B task is still open
    expect(row).to_contain_text("20 / 27 picked")
    expect(page.get_by_role("row").filter(has_text="SC-2")).to_contain_text("1")  # the SKU-B task is still open
    shoot(page, tmp_path, "orders")
    row.get_by_role("link", name="SO-WEB").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Order SO-WEB")
    task_row = page.get_by_role("row").filter(has_text="BIN-A2")
    expect(task_row).to_contain_text("done")
    expect(task_row.locator("td").last).to_have_text("1")  # the refused wrong-bin scan
    expect(page.get_by_role("row").filter(has_text="SKU-A").first).to_contain_text("5")  # backordered
    shoot(page, tmp_path, "order")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Replenishment").click()
    expect(page.locator("body")).to_have_attribute("data-loaded", "replenishment")
    # available 0 <= reorder point 30: two lots of 24 lift it above 30 plus the lead-time demand
    expect(page.get_by_role("row").filter(has_text="SKU-A").first).to_contain_text("48")
    expect(page.get_by_role("row").filter(has_text="stock low")).to_be_visible()
    shoot(page, tmp_path, "replenishment")
    # the customer's page: the order's status and nothing else of ours
    page.goto(f"/track/order/{released['public_token']}")
    expect(page.locator("body")).to_have_attribute("data-loaded", "track-order")
    expect(page.locator("#track-status")).to_have_text("Being picked")
    for secret in ("SO-WEB", "CUST-1", "SKU-A", "BIN-A2", "SC-2"):
        expect(page.locator("body")).not_to_contain_text(secret)
    shoot(page, tmp_path, "track-order")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"dashboard-{n}-{w}.png" for n in ("orders", "order", "replenishment", "track-order") for w in (1280, 390))
