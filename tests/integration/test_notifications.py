"""Notifications end to end with a REAL HTTP receiver and a REAL SMTP server (aiosmtpd) started
in the test process: subscriptions fed by the events outbox, HMAC signatures, idempotency keys,
retries with backoff while the receiver is down, nothing for a rolled-back transaction, and a
logistics exception (opened by ingest's own function) notifying the customer and the agent.

Retries are driven by passing the clock to ``deliver_due`` (the backoff is in minutes): no sleep."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from api.notify.loop import ServiceLoop
from api.service_config import ServiceSettings
from ingest.telemetry_rules import open_ticket
from tests.integration.api_fixtures import ClientFor
from tests.integration.world import build_world

pytestmark = pytest.mark.integration
DEADLINE_S = 60.0


@dataclass
class Receiver:
    """An HTTP endpoint that answers 503 to the first ``fail_first`` requests, then 200."""

    fail_first: int = 0
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                status = 503 if len(state.requests) < state.fail_first else 200
                state.requests.append(({k.lower(): v for k, v in self.headers.items()}, raw, status))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:  # a free port (aiosmtpd's readiness check cannot use port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def loop(smtp: tuple[Inbox, int]) -> Iterator[ServiceLoop]:
    service = ServiceLoop("unused", ServiceSettings(smtp_port=smtp[1], retry_base_s=60, retry_max_s=3600,
                                                    retry_for_h=48, notifier_interval_s=0.2))
    yield service
    service.close()


def signed(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_logistics_exception_notifies_customer_and_agent_with_retries(
        db: psycopg.Connection, client_for: ClientFor, receiver: Receiver, smtp: tuple[Inbox, int],
        loop: ServiceLoop) -> None:
    build_world(db)
    admin = client_for("admin")
    admin.put("/api/v1/assignment-rules/logistics_exception/DC1", json={"agents": ["ann"]}).raise_for_status()
    hook = admin.put("/api/v1/subscriptions/cust-1-hook", json={
        "channel": "webhook", "target": receiver.url, "events": ["ticket"], "filter": {"customer": "CUST-1"}})
    assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]
    assert len(secret) > 20
    admin.put("/api/v1/subscriptions/ann-mail", json={"channel": "email", "target": "ann@example.com",
                                                      "events": ["ticket"], "filter": {"assignee": "ann"}}
              ).raise_for_status()
    receiver.fail_first = 2  # the customer's endpoint is down for the first two attempts

    # a rolled-back transaction publishes nothing
    with pytest.raises(RuntimeError), db.transaction(), db.cursor() as cur:
        open_ticket(cur, "SHP-1", "late_delivery", None, "rolled back")
        raise RuntimeError("abort")
    # the real thing: ingest opens the exception ticket (no customer or assignee yet)
    with db.transaction(), db.cursor() as cur:
        open_ticket(cur, "SHP-1", "temperature_excursion", None, "Shipment SHP-1 was too warm")
    loop.run_once(db)  # intake (customer, assignee) → outbox → fan-out → first attempts
    first = db.execute("SELECT d.id, d.attempts, d.status, d.delivery_key FROM deliveries d "
                       "WHERE subscription_id = 'cust-1-hook'").fetchall()
    assert [(a, s) for _, a, s, _ in first] == [(1, "pending")]  # one ticket event matched the customer
    assert len(receiver.requests) == 1 and receiver.requests[0][2] == 503
    # retries: exponential backoff (60 s, then 120 s); the receiver recovers on the third
    now = datetime.now(UTC)
    assert loop.deliver_due(db, now + timedelta(seconds=30)) == 0  # not due yet
    assert loop.deliver_due(db, now + timedelta(seconds=61)) == 1
    assert loop.deliver_due(db, now + timedelta(seconds=61 + 119)) == 0
    assert loop.deliver_due(db, now + timedelta(seconds=61 + 121)) == 1
    log = admin.get("/api/v1/subscriptions/cust-1-hook/deliveries").json()["items"]
    assert [(d["status"], d["attempts"], d["last_http_status"]) for d in log] == [("delivered", 3, 200)]
    statuses = [s for _, _, s in receiver.requests]
    assert statuses == [503, 503, 200]
    keys = {h["x-cargotrace-delivery"] for h, _, _ in receiver.requests}
    assert keys == {first[0][3]}  # the same idempotency key on every attempt
    for headers, raw, _ in receiver.requests:
        assert headers["x-cargotrace-signature"] == signed(secret, raw)
        assert headers["x-cargotrace-event"] == "ticket"
    event = orjson.loads(receiver.requests[-1][1])
    assert event["kind"] == "ticket"
    data = event["data"]
    assert (data["type"], data["customer"], data["assignee"], data["shipment"]) == (
        "logistics_exception", "CUST-1", "ann", "SHP-1")
    assert "timeline" not in data and "contact" not in data  # nothing internal to the customer
    # the agent got an email over SMTP
    inbox, _ = smtp
    assert len(inbox.messages) == 1
    rcpts, mail = inbox.messages[0]
    assert rcpts == ["ann@example.com"]
    assert mail["Subject"].startswith(f"[cargotrace] ticket {data['id']}")
    assert mail["X-Cargotrace-Delivery"]
    assert db.execute("SELECT count(*) FROM tickets WHERE summary = 'rolled back'").fetchone() == (0,)


def test_a_receiver_down_for_days_is_given_up_after_the_retry_period(
        db: psycopg.Connection, client_for: ClientFor, receiver: Receiver, loop: ServiceLoop) -> None:
    build_world(db)
    admin = client_for("admin")
    admin.put("/api/v1/subscriptions/all-tickets", json={"channel": "webhook", "target": receiver.url,
                                                         "events": ["ticket"], "secret": "s" * 20}
              ).raise_for_status()
    with socket.socket() as probe:  # a port nobody listens on: the receiver's host is down
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    admin.put("/api/v1/subscriptions/host-down", json={"channel": "webhook", "target": f"http://127.0.0.1:{closed}/",
                                                       "events": ["ticket"]}).raise_for_status()
    receiver.fail_first = 10_000
    client_for("operator").post("/api/v1/tickets", json={"type": "complaint", "summary": "x"}).raise_for_status()
    loop.run_once(db)
    down = admin.get("/api/v1/subscriptions/host-down/deliveries").json()["items"]
    assert [(d["status"], d["attempts"], d["last_http_status"]) for d in down] == [("pending", 1, None)]
    assert down[0]["last_error"].startswith("ConnectError")
    now = datetime.now(UTC)
    assert loop.deliver_due(db, now + timedelta(hours=24)) == 2  # both still retried after a day
    assert admin.get("/api/v1/subscriptions/all-tickets/deliveries").json()["items"][0]["status"] == "pending"
    assert loop.deliver_due(db, now + timedelta(hours=49)) == 2
    last = admin.get("/api/v1/subscriptions/all-tickets/deliveries").json()["items"][0]
    assert (last["status"], last["attempts"], last["last_http_status"]) == ("failed", 3, 503)


def test_the_service_loop_thread_delivers_on_notify(db: psycopg.Connection, client_for: ClientFor,
                                                    receiver: Receiver, smtp: tuple[Inbox, int],
                                                    database_url: str) -> None:
    admin = client_for("admin")
    admin.put("/api/v1/subscriptions/rma-hook", json={"channel": "webhook", "target": receiver.url,
                                                      "events": ["ticket"]}).raise_for_status()
    service = ServiceLoop(database_url, ServiceSettings(smtp_port=smtp[1], notifier_interval_s=0.5))
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        client_for("operator").post("/api/v1/tickets", json={"type": "complaint", "summary": "hi"}
                                    ).raise_for_status()
        wait_for(lambda: len(receiver.requests) >= 1, "the webhook")
    finally:
        stop.set()
        thread.join(timeout=DEADLINE_S)
        service.close()
    assert orjson.loads(receiver.requests[0][1])["data"]["summary"] == "hi"
