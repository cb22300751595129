"""Broker abuse, tried as an outside client with one device's real credentials (issue 10 points 1, 2, 9).

Everything runs against the project's Mosquitto and the real database: a device tries to take over
an ingest worker's session, to publish retained or off-kind, and to flood the dead letters.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices.broker_accounts import BrokerAccounts, BrokerError, validate_device_id
from devices.provisioning import Credentials
from ingest.decode import RETAINED_PUBLISH
from ingest.worker import ensure_sessions
from runtime.settings import Settings
from tests.integration.stack_helpers import count, device, provision, running_worker, stack_settings, unique, wait_until

pytestmark = pytest.mark.integration

TIMEOUT = 60.0
NOT_AUTHORIZED = 135


class Probe:
    """An MQTT 5 client recording CONNACK, PUBACK reason codes and received messages."""

    def __init__(self, settings: Settings, username: str, password: str, client_id: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.settings = settings
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.pubacks: dict[int, ReasonCode] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, p: Any) -> None:
        with self.cond:
            self.connack, self.session_present = rc, flags.session_present
            self.cond.notify_all()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: ReasonCode, p: Any) -> None:
        with self.cond:
            self.pubacks[mid] = rc
            self.cond.notify_all()

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def connect(self, clean_start: bool) -> ReasonCode:
        self.client.connect(self.settings.mqtt_host, self.settings.mqtt_port, clean_start=clean_start)
        self.client.loop_start()
        with self.cond:
            assert self.cond.wait_for(lambda: self.connack is not None, TIMEOUT), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self.cond:
            assert self.cond.wait_for(lambda: info.mid in self.pubacks, TIMEOUT), f"no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _reading(msg_id: str) -> bytes:
    return orjson.dumps({"msg_id": msg_id, "ts": datetime.now(UTC).isoformat(), "temp_c": 4.5})


@pytest.mark.parametrize("clean_start", [False, True], ids=["persistent-session", "clean-session"])
def test_device_cannot_take_over_an_ingest_workers_session(
        broker_settings: Settings, database_url: str, db: psycopg.Connection, clean_start: bool) -> None:
    group = unique("g")
    settings = stack_settings(broker_settings, database_url, ingest_group=group,
                              ingest_client_prefix=f"cargotrace-ingest-{group}")
    ensure_sessions(settings, 1)  # the worker's persistent session exists; the worker is down
    attacker, victim = provision(settings, db, prefix="a"), provision(settings, db, prefix="b")
    with device(victim, settings) as b:
        b.publish("env", _reading("victim-1"))  # queued for the stopped worker's session
    for client_id in (f"{settings.ingest_client_prefix}-0", "cargotrace-ingest-0"):
        thief = Probe(settings, attacker.username, attacker.password, client_id)
        try:
            assert thief.connect(clean_start).value == NOT_AUTHORIZED
            assert thief.messages == []
        finally:
            thief.close()
    with running_worker(settings):
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings WHERE msg_id = 'victim-1'") == 1,
                   timeout=TIMEOUT, what="the victim's reading, delivered to the real worker")
    assert count(db, "SELECT count(*) FROM dead_letters") == 0


def test_device_connects_only_with_its_own_id(broker_settings: Settings, db: psycopg.Connection,
                                              database_url: str) -> None:
    settings = stack_settings(broker_settings, database_url)
    creds = provision(settings, db)
    wrong = Probe(settings, creds.username, creds.password, f"{creds.device_id}-other")
    own = Probe(settings, creds.username, creds.password, creds.device_id)
    try:
        assert wrong.connect(True).value == NOT_AUTHORIZED
        assert not own.connect(True).is_failure
    finally:
        wrong.close()
        own.close()


def test_platform_client_id_prefix_is_not_a_device_id(broker_settings: Settings) -> None:
    with pytest.raises(BrokerError, match="reserved"):
        validate_device_id("cargotrace-ingest-0")
    with BrokerAccounts(broker_settings) as accounts, pytest.raises(BrokerError, match="reserved"):
        accounts.add_device("Cargotrace-ingest-1")


def _own_device(settings: Settings, creds: Credentials) -> Probe:
    probe = Probe(settings, creds.username, creds.password, creds.device_id)
    assert not probe.connect(True).is_failure
    return probe


def test_device_may_publish_only_the_five_kinds_under_its_prefix(
        broker_settings: Settings, database_url: str, db: psycopg.Connection) -> None:
    settings = stack_settings(broker_settings, database_url)
    creds, other = provision(settings, db), provision(settings, db)
    probe = _own_device(settings, creds)
    own = f"{settings.topic_prefix}/dev/{creds.device_id}"
    try:
        for kind in ("scan", "rfid", "position", "env", "status"):
            assert not probe.publish(f"{own}/{kind}", b"{}").is_failure, kind
        for topic in (f"{own}/config", f"{own}/debug", f"{own}/env/extra", own,
                      f"{settings.topic_prefix}/dev/{other.device_id}/env", "$SYS/broker/x", "elsewhere"):
            assert probe.publish(topic, b"{}").value == NOT_AUTHORIZED, topic
    finally:
        probe.close()


def test_receive_is_denied_by_default(broker_settings: Settings) -> None:
    with BrokerAccounts(broker_settings) as accounts:
        defaults = accounts._command("getDefaultACLAccess").get("acls", [])
    assert {a["acltype"]: a["allow"] for a in defaults}["publishClientReceive"] is False


def test_retained_publish_becomes_a_dead_letter_and_its_copy_is_cleared(
        broker_settings: Settings, database_url: str, db: psycopg.Connection) -> None:
    settings = stack_settings(broker_settings, database_url)
    creds = provision(settings, db)
    topic = f"{settings.topic_prefix}/dev/{creds.device_id}/env"
    with running_worker(settings):
        probe = _own_device(settings, creds)
        try:
            probe.publish(topic, _reading("retained-1"), retain=True)
            probe.publish(topic, _reading("plain-1"))
        finally:
            probe.close()
        wait_until(lambda: count(db, "SELECT count(*) FROM dead_letters WHERE reason = %s", RETAINED_PUBLISH) == 1
                   and count(db, "SELECT count(*) FROM env_readings WHERE msg_id = 'plain-1'") == 1,
                   timeout=TIMEOUT, what="the retained publish dead-lettered, the plain one stored")
        assert count(db, "SELECT count(*) FROM env_readings WHERE msg_id = 'retained-1'") == 0
        # A new subscriber (the service may read the uplink) gets no retained copy any more.
        watcher = Probe(settings, settings.mqtt_service_user, settings.mqtt_service_password, unique("cargotrace-t"))
        try:
            watcher.connect(True)
            marker = _reading("marker")
            watcher.client.subscribe(topic, qos=1)
            # The marker, published by the device after the subscription, proves delivery works.
            probe = _own_device(settings, creds)
            try:
                wait_until(lambda: not probe.publish(topic, marker).is_failure and bool(watcher.messages),
                           timeout=TIMEOUT, what="the marker reaching the watcher")
            finally:
                probe.close()
            assert [m.payload for m in watcher.messages if m.retain and m.payload] == []
        finally:
            watcher.close()


def test_a_100000_element_bad_array_adds_one_dead_letter(
        broker_settings: Settings, database_url: str, db: psycopg.Connection) -> None:
    settings = stack_settings(broker_settings, database_url)
    creds = provision(settings, db)
    payload = orjson.dumps([0] * 100_000)  # 200 KB: under the payload limit, every element bad
    with running_worker(settings), device(creds, settings) as d:
        d.publish("env", payload)
        d.publish("env", [{"msg_id": "ok", "ts": datetime.now(UTC).isoformat(), "temp_c": 1.0}, 7])
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings WHERE msg_id = 'ok'") == 1,
                   timeout=TIMEOUT, what="the good element of the second payload")
        wait_until(lambda: count(db, "SELECT count(*) FROM dead_letters") == 2, timeout=TIMEOUT,
                   what="one letter per bad payload")
    whole = db.execute("SELECT reason, detail, element_index, payload_size, length(detail) FROM dead_letters "
                       "WHERE payload_size = %s", (len(payload),)).fetchone()
    assert whole is not None
    reason, detail, index, size, detail_len = whole
    assert (reason, index, size) == ("not_an_object", None, len(payload))
    assert detail.startswith("100000 elements rejected (not_an_object x100000)") and detail_len < 32_000
    # Few bad elements keep one replayable letter each, with the element's index.
    assert db.execute("SELECT element_index FROM dead_letters WHERE payload_size <> %s",
                      (len(payload),)).fetchall() == [(1,)]


def test_a_flood_of_1mib_payloads_stays_within_the_workers_byte_bound(
        broker_settings: Settings, database_url: str, db: psycopg.Connection) -> None:
    bound = 2 * 1024 * 1024
    settings = stack_settings(broker_settings, database_url, ingest_max_unacked_bytes=bound)
    creds = provision(settings, db)
    big = b"x" * (1024 * 1024 - 1024)  # just under the broker's 1 MiB packet limit; over the payload limit
    with running_worker(settings) as worker, device(creds, settings) as d:
        for _ in range(24):  # 24 MiB in all, twelve times the bound
            d.publish("env", big)
        wait_until(lambda: count(db, "SELECT count(*) FROM dead_letters WHERE reason = 'payload_too_large'") == 1
                   and count(db, "SELECT sum(occurrences) FROM dead_letters") == 24,
                   timeout=TIMEOUT, what="every flooded payload dead-lettered (one row, 24 occurrences)")
    # The bound, plus the one message that found the worker just under it.
    assert 0 < worker.peak_held_bytes <= bound + len(big)


def test_a_device_provisioned_before_the_binding_is_upgraded(broker_settings: Settings) -> None:
    """Accounts from before this release (any client id, `own/#` publish, no receive grant) are
    brought up to date by `cargotrace up` (ensure_service_accounts)."""
    device_id = unique("legacy")
    with BrokerAccounts(broker_settings) as accounts:
        role = f"cargotrace-device:{device_id}"
        own = f"{broker_settings.topic_prefix}/dev/{device_id}"
        accounts._command("createRole", rolename=role, acls=[
            {"acltype": "publishClientSend", "topic": f"{own}/#", "allow": True, "priority": 0},
            {"acltype": "subscribeLiteral", "topic": f"{own}/config", "allow": True, "priority": 0}])
        accounts._command("createClient", username=device_id, password="legacy-password-123",
                          roles=[{"rolename": role}])
        accounts.ensure_service_accounts()
        client = accounts._get_client(device_id)
        acls = accounts._command("getRole", rolename=role)["role"]["acls"]
    assert client is not None and client.get("clientid") == device_id
    topics = {(a["acltype"], a["topic"]) for a in acls}
    assert ("publishClientSend", f"{own}/#") not in topics
    assert ("publishClientSend", f"{own}/env") in topics and ("publishClientReceive", f"{own}/config") in topics
    thief = Probe(broker_settings, device_id, "legacy-password-123", "cargotrace-ingest-0")
    try:
        assert thief.connect(False).value == NOT_AUTHORIZED
    finally:
        thief.close()
