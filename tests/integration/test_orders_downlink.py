"""Tasks and feedback to scanners on the real broker: retained, versioned task lists a device reads
only for itself, and feedback within the loop device -> ingest worker -> downlink publisher -> device."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices.broker_accounts import BrokerAccounts
from devices.provisioning import Credentials
from ingest.downlink import DownlinkPublisher, running_downlink
from runtime.settings import Settings
from tests.integration.api_fixtures import ClientFor
from tests.integration.stack_helpers import provision, running_worker, wait_until
from tests.integration.world import GTIN_A, apply, build_world, gs1, scan

pytestmark = pytest.mark.integration
WAIT = 60.0


class Listener:
    """A device's own MQTT session recording what it receives and the broker's SUBACK codes."""

    def __init__(self, creds: Credentials) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.subacks: list[list[ReasonCode]] = []
        # A device's one session: its client id is its device id (the broker binds them).
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.device_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(creds.username, creds.password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.append(list(codes))
        self.client.connect(creds.host, creds.port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, orjson.loads(msg.payload), bool(msg.retain)))

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=WAIT)
        return info

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for topic, body, _ in self.messages if topic.endswith("/" + kind)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def scanners(db: psycopg.Connection, broker_settings: Settings) -> Iterator[tuple[Credentials, Credentials]]:
    build_world(db)
    apply(db, [scan("SC-1", "r1", gs1(GTIN_A, lot="L1", expiry="270131"), 0, qty=5, location="BIN-A1"),
               scan("SC-1", "r2", gs1(GTIN_A, lot="L2", expiry="261231"), 1, qty=5, location="BIN-A2")])
    a = provision(broker_settings, db, kind="scanner", prefix="scan")
    b = provision(broker_settings, db, kind="scanner", prefix="scan")
    db.execute("UPDATE devices SET site = 'DC1', location = 'BIN-A1' WHERE device_id = ANY(%s)",
               ([a.device_id, b.device_id],))
    yield a, b
    # The broker is session-wide: leave it clean (no accounts, no retained task lists).
    publisher = DownlinkPublisher(broker_settings)
    publisher.connect()
    try:
        for creds in (a, b):
            publisher.clear_task_list(creds.device_id)
    finally:
        publisher.close()
    with BrokerAccounts(broker_settings) as accounts:
        for creds in (a, b):
            accounts.remove_device(creds.device_id)


def test_tasks_are_retained_versioned_and_private_and_feedback_closes_the_loop(
        scanners: tuple[Credentials, Credentials], client_for: ClientFor, api_settings: Settings,
        db: psycopg.Connection) -> None:
    a, b = scanners
    prefix = api_settings.topic_prefix
    operator: TestClient = client_for("operator")
    assert operator.put("/api/v1/orders/SO-D", json={"customer": "CUST-1", "site": "DC1",
                                                     "lines": [{"sku": "SKU-A", "qty": 7}]}).status_code == 201
    with running_downlink(api_settings), running_worker(api_settings):
        released = operator.post("/api/v1/orders/SO-D/release", json={"device": a.device_id}).json()
        tasks = {t["lot"]: t for t in released["tasks"]}
        # subscribed after the publication: the list is retained
        la, lb = Listener(a), Listener(b)
        try:
            la.client.subscribe([(f"{prefix}/dev/{a.device_id}/tasks", 1), (f"{prefix}/dev/{a.device_id}/feedback", 1)])
            lb.client.subscribe(f"{prefix}/dev/{a.device_id}/tasks", 1)     # someone else's tasks: refused
            wait_until(lambda: len(lb.subacks) == 1 and len(la.subacks) == 1, WAIT, "SUBACKs")
            assert all(not code.is_failure for code in la.subacks[0])
            assert lb.subacks[0][0].is_failure
            wait_until(lambda: bool(la.of("tasks")), WAIT, "the retained task list")
            first = la.of("tasks")[-1]
            assert {t["task_id"] for t in first["tasks"]} == {t["task_id"] for t in released["tasks"]}
            assert set(first["tasks"][0]) == {"task_id", "type", "ref", "sku", "gtin", "lot", "qty", "from_location",
                                              "to_location", "due_at"}
            # L2 is wanted at BIN-A2: scanning it at BIN-A1 is the wrong bin
            la.publish(f"{prefix}/dev/{a.device_id}/scan", orjson.dumps(
                {"msg_id": "wrong", "code": gs1(GTIN_A, lot="L2", expiry="261231"), "mode": "pick",
                 "location": "BIN-A1", "qty": 5}))
            wait_until(lambda: bool(la.of("feedback")), WAIT, "feedback on the refused scan")
            assert la.of("feedback")[0] == {"msg_id": "wrong", "ok": False, "reason": "wrong_bin",
                                            "task_id": tasks["L2"]["task_id"]}
            la.publish(f"{prefix}/dev/{a.device_id}/scan", orjson.dumps(
                {"msg_id": "right", "code": gs1(GTIN_A, lot="L2", expiry="261231"), "mode": "pick",
                 "location": "BIN-A2", "qty": 5, "task_id": tasks["L2"]["task_id"]}))
            wait_until(lambda: len(la.of("feedback")) == 2, WAIT, "feedback on the completing scan")
            assert la.of("feedback")[1] == {"msg_id": "right", "ok": True, "reason": "done",
                                            "task_id": tasks["L2"]["task_id"]}
            wait_until(lambda: la.of("tasks")[-1]["version"] > first["version"], WAIT, "a new task list")
            assert [t["lot"] for t in la.of("tasks")[-1]["tasks"]] == ["L1"]
            # a device cannot forge its own task list
            la.publish(f"{prefix}/dev/{a.device_id}/tasks", b'{"version": 999, "tasks": []}')
            assert lb.of("tasks") == []
        finally:
            la.close()
            lb.close()
        # the retained list is still the server's
        late = Listener(a)
        try:
            late.client.subscribe(f"{prefix}/dev/{a.device_id}/tasks", 1)
            wait_until(lambda: bool(late.of("tasks")), WAIT, "the retained list for a new session")
            assert late.of("tasks")[-1]["version"] < 999 and [t["lot"] for t in late.of("tasks")[-1]["tasks"]] == ["L1"]
        finally:
            late.close()
    assert db.execute("SELECT count(*) FROM scan_feedback WHERE published_at IS NULL").fetchone() == (0,)
