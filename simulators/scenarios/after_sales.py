"""``after-sales``: a damaged delivery answered end to end.

One shipment of yoghurt (24 cases) to customer A, loaded at 00:30 and delivered at about 01:00.
Two cases arrived crushed: the customer reports it from the tracking page, customer service
opens a return (RMA ``RMA-<RUN>``, approved), and the driver's colleague scans the two cases into
the returns area with that ref 20 minutes after the delivery. Inspection restocks one case and
scraps the other; a refund is recorded and the RMA closed; the complaint is resolved and rated.
Separately a repair order on a returned insulin pen consumes two seal kits from stock (received
and put away in the same run) into the site's ``consumed`` location.

The MQTT part (scans, GPS, reefer) is the plan; the people's part goes through the HTTP API in
``service_steps`` after the play, as the demo does.

Afterwards the platform shows: shipment ``delivered``; a ``complaint`` ticket from the public
channel, resolved, feedback 5; RMA ``RMA-<RUN>`` closed with 2 receipts and two inspection
movements (returns → bin, returns → inventory loss) and a refund; a repair with two parts moved
to the consumed location; ``GET /reports/service`` counting them.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx

from simulators.models.gs1codes import gtin14, sscc
from simulators.models.warehouse import Item
from simulators.provision import ApiClient, ApiError
from simulators.scenarios import one_trip as ot
from simulators.scenarios import world as w
from simulators.scenarios.base import ScenarioContext, ScenarioPlan, streams_of
from simulators.scenarios.normal_day import dc_scanners

NAME = "after-sales"
SPAN_S = 120 * 60.0
BENCH = "SIM-DC1-BENCH"
USED = "SIM-DC1-USED"
# A return scan of lot-tracked goods (no serial to trace back) is booked from a customer location of
# the receiving site (core.ledger's return rule); the world's customers belong to their own sites.
RETURNING = "SIM-DC1-CUSTOMERS"
SEAL = Item("SIM-SEAL", "Seal kit (spare part)", gtin14(w.COMPANY_PREFIX, "40001"))
RETURN_AFTER = timedelta(minutes=20)


def rma_ref(ctx: ScenarioContext) -> str:
    return f"RMA-{ctx.up}"


def build(ctx: ScenarioContext) -> ScenarioPlan:
    ot.needs(ctx, NAME, SPAN_S)
    day = ot.one_trip(ctx, "as")
    returned_at = day.delivered_at + RETURN_AFTER
    ot.in_span(ctx, returned_at, "the return scan")
    hh1, hh2, _ = dc_scanners(ctx, "as")  # the same two handhelds as the trip's...
    hh1.ids.seq = hh2.ids.seq = 100_000  # ...continuing with msg_ids the trip's scans never reach
    wh = day.warehouse
    yog = w.lot(w.YOG, ctx.tag, "Y", ctx.clock.sim_start.date())
    seals = w.lot(SEAL, ctx.tag, "S", ctx.clock.sim_start.date())
    wh.messages.clear()  # the trip's scans are in day.messages already
    wh.receive_pallet(ctx.at(5), hh1, seals, 10, w.DOCK1, w.SUPPLIER, sscc(w.COMPANY_PREFIX, 12), f"PO-S{ctx.up}")
    wh.putaway(ctx.at(12), hh2, seals, 10, w.DOCK1, w.BINS[0])
    # Two crushed cases come back with the RMA's ref on the return label.
    wh.messages.append(hh1.scan(returned_at, "return", wh.case_code(hh1, yog), qty=2, location=w.RETURNS,
                                ref=rma_ref(ctx)))
    master = [*day.master,
              (f"/items/{SEAL.sku}", {"name": SEAL.name, "gtin": SEAL.gtin}),
              (f"/locations/{BENCH}", {"site": w.SITE, "type": "repair", "name": "Repair bench"}),
              (f"/locations/{USED}", {"site": w.SITE, "type": "consumed", "name": "Parts consumed by repairs"}),
              (f"/locations/{RETURNING}", {"site": w.SITE, "type": "customer", "name": "Customers' returns"})]
    messages = [*day.messages, *wh.messages]
    trip = day.trip
    expected: dict[str, Any] = {
        "shipments": {trip.ref: "delivered"},
        "rma": rma_ref(ctx),
        "returned": {"sku": w.YOG.sku, "lot": yog.lot, "qty": 2},
        "spare_part": {"sku": SEAL.sku, "lot": seals.lot, "location": w.BINS[0], "qty": 10},
        "shipment": trip.ref,
        "customer": trip.customer.location,
    }
    shows = [f"shipment {trip.ref} delivered at ~{day.delivered_at:%H:%M} UTC",
             f"a return scan of 2 × {w.YOG.sku} lot {yog.lot} with ref {rma_ref(ctx)} at ~{returned_at:%H:%M} UTC",
             "after `service_steps`: a resolved, rated complaint; the RMA closed with a refund; a repair with parts"]
    return ScenarioPlan(master, [*day.devices], streams_of(messages), expected, shows, len(messages))


def _wait_for_receipts(api: ApiClient, ref: str, want: int, deadline_s: float = 60.0) -> dict[str, Any]:
    """Ingest commits the return scan a moment after it was published: poll, never sleep blindly."""
    end = time.monotonic() + deadline_s
    while True:
        rma: dict[str, Any] = api.get(f"/rmas/{ref}")
        if len(rma["receipts"]) >= want or time.monotonic() > end:
            return rma
        time.sleep(0.5)


def _call(client: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = client.request(method, path, json=body)
    if response.status_code >= 400:
        raise ApiError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json() if response.content else None


def service_steps(api_url: str, admin_token: str, expected: dict[str, Any]) -> list[str]:
    """The people's side of the story, through the HTTP API; returns what was done, line by line."""
    base = api_url.rstrip("/") + ("" if api_url.rstrip("/").endswith("/api/v1") else "/api/v1")
    staff = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    public = httpx.Client(base_url=base, timeout=30)
    done: list[str] = []
    with staff, public, ApiClient(api_url, admin_token) as api:
        shipment = _call(staff, "GET", f"/shipments/{expected['shipment']}")
        token = shipment["public_token"]
        issue = _call(public, "POST", f"/track/{token}/issues",
                      {"summary": "Two cases of yoghurt arrived crushed", "contact": "orders@customer-a.example"})
        done.append(f"complaint #{issue['id']} reported from the tracking page")
        _call(staff, "PATCH", f"/tickets/{issue['id']}", {"status": "in_progress", "note": "photos received"})
        returned = expected["returned"]
        ref = expected["rma"]
        _call(staff, "POST", "/rmas", {"ref": ref, "customer": expected["customer"], "shipment": expected["shipment"],
                                       "ticket": issue["id"], "lines": [{"sku": returned["sku"], "lot": returned["lot"],
                                                                         "qty": returned["qty"], "reason": "crushed"}]})
        _call(staff, "POST", f"/rmas/{ref}/approve", {"reason": "damage confirmed by photos"})
        rma = _wait_for_receipts(api, ref, 1)
        done.append(f"{ref} approved; {len(rma['receipts'])} return receipt(s) matched")
        rma = _call(staff, "POST", f"/rmas/{ref}/inspect", {"lines": [
            {"sku": returned["sku"], "lot": returned["lot"], "qty": 1, "disposition": "restock"},
            {"sku": returned["sku"], "lot": returned["lot"], "qty": 1, "disposition": "scrap"}]})
        done.append(f"{ref} inspected: " + ", ".join(f"{i['disposition']} → {i['to_location']}"
                                                     for i in rma["inspections"]))
        _call(staff, "POST", f"/rmas/{ref}/settle", {"refund": {"amount": "4.50", "currency": "EUR", "status": "paid"}})
        _call(staff, "POST", f"/rmas/{ref}/close")
        _call(staff, "PATCH", f"/tickets/{issue['id']}", {"status": "resolved", "note": "refund paid"})
        _call(public, "POST", f"/track/{token}/feedback", {"ticket": issue["id"], "score": 5, "comment": "fair"})
        done.append(f"{ref} refunded and closed; complaint #{issue['id']} resolved and rated 5/5")
        ticket = _call(staff, "POST", "/tickets", {"type": "repair", "summary": "Insulin pen dose button stuck",
                                                  "shipment": expected["shipment"]})
        repair = _call(staff, "POST", "/repairs", {"ticket": ticket["id"], "sku": w.PHARMA.sku,
                                                   "serial": f"PEN-{ref}", "fault": "dose button stuck"})
        part = expected["spare_part"]
        repair = _call(staff, "POST", f"/repairs/{repair['id']}/parts", {"sku": part["sku"], "qty": 2,
                                                                          "lot": part["lot"]})
        _call(staff, "PATCH", f"/repairs/{repair['id']}", {"status": "done"})
        done.append(f"repair #{repair['id']}: {len(repair['parts'])} part movement(s) to the consumed location; "
                    f"warranty covered: {repair['warranty']['covered']}")
    return done
