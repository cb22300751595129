"""The ``after-sales`` scenario end to end, as the demo plays it: the simulated devices over the
real broker into a real ingest worker, the API process running the service loop, then the
people's steps through the HTTP API (tracking-page complaint, RMA, inspection, refund, feedback,
repair with parts)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest

from api.tokens import create_token
from cli.api_server import ApiServer
from ingest.db import connect
from runtime.settings import Settings
from simulators.provision import ApiClient
from simulators.scenarios import run_scenario
from simulators.scenarios.after_sales import service_steps
from tests.integration.broker_fixtures import free_port
from tests.integration.stack_helpers import running_worker, stack_settings

pytestmark = pytest.mark.integration
DEADLINE_S = 60.0


@pytest.fixture
def stack(broker_settings: Settings, database_url: str, db: psycopg.Connection) -> Iterator[tuple[Settings, str, str]]:
    """The API process (with its service loop) and one ingest worker, on an emptied database."""
    settings = stack_settings(broker_settings, database_url, api_port=free_port())
    server = ApiServer(settings)
    server.start()
    with ExitStack() as es:
        es.enter_context(running_worker(settings, 0))
        conn = es.enter_context(connect(database_url, autocommit=True))
        try:
            yield settings, server.url, create_token(conn, "admin", "after-sales scenario")
        finally:
            server.stop()


def test_after_sales_scenario_then_the_service_steps(stack: tuple[Settings, str, str]) -> None:
    settings, url, token = stack
    report = run_scenario("after-sales", api_url=url, admin_token=token, broker_host=settings.mqtt_host,
                          broker_port=settings.mqtt_port, topic_prefix=settings.topic_prefix, seed=4, speedup=600,
                          duration_s=15, run_id="as1", progress=False)
    assert report.failed == 0
    ref, shipment = report.expected["rma"], report.expected["shipment"]
    with ApiClient(url, token) as api:
        deadline = time.monotonic() + DEADLINE_S
        while api.get(f"/shipments/{shipment}")["status"] != "delivered":
            assert time.monotonic() < deadline, "the delivery was not ingested"
            time.sleep(0.5)
        done = service_steps(url, token, report.expected)
        assert len(done) == 5, done
        rma = api.get(f"/rmas/{ref}")
        assert rma["status"] == "closed" and rma["refund"]["status"] == "paid"
        assert [(r["qty"], r["exception"]) for r in rma["receipts"]] == [(2, None)]
        assert sorted(i["to_location"] for i in rma["inspections"]) == ["SIM-DC1-A01", "SIM-DC1-LOSS"]
        tickets = api.items("/tickets", shipment=shipment)
        complaint = next(t for t in tickets if t["channel"] == "public")
        assert (complaint["status"], complaint["feedback_score"], complaint["rma"]) == ("resolved", 5, ref)
        part = report.expected["spare_part"]
        used = [s for s in api.items("/stock", sku=part["sku"]) if s["location"] == "SIM-DC1-USED"]
        assert [(s["lot"], s["qty"]) for s in used] == [(part["lot"], 2)]
        service = api.get("/reports/service", site="SIM-DC1")
        assert service["returns"] == [{"sku": "SIM-YOG", "reason": "crushed", "qty": 2.0}]
        assert service["mean_feedback"] == 5.0
