"""Helpers for tests that run the real ingest path: devices with real broker credentials
publishing over MQTT to the project's Mosquitto, workers writing to the real TimescaleDB."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.provisioning import Credentials, DeviceSpec, add_device
from ingest.worker import IngestWorker
from runtime.settings import Settings


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def stack_settings(broker_settings: Settings, database_url: str, **overrides: Any) -> Settings:
    """A private ingest group and client ids per test, so no test inherits another's MQTT session."""
    group = unique("g")
    values: dict[str, Any] = {"database_url": database_url, "ingest_group": group,
                              "ingest_client_prefix": f"ingest-{group}", "ingest_batch_wait_ms": 20}
    values.update(overrides)
    return broker_settings.model_copy(update=values)


def provision(settings: Settings, conn: psycopg.Connection, kind: str = "env_sensor",
              prefix: str = "dev") -> Credentials:
    return add_device(settings, conn, DeviceSpec(unique(prefix), kind))


class Device:
    """A device as it is in the field: its own credentials, MQTT 5, QoS 1, PUBACK awaited."""

    def __init__(self, creds: Credentials, settings: Settings) -> None:
        self.creds = creds
        self.prefix = settings.topic_prefix
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.device_id,
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(creds.username, creds.password)
        self.client.connect(creds.host, creds.port)
        self.client.loop_start()

    def topic(self, kind: str) -> str:
        return f"{self.prefix}/dev/{self.creds.device_id}/{kind}"

    def publish(self, kind: str, payload: object, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        info = self.client.publish(self.topic(kind), data, qos=qos)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"broker did not acknowledge a publish to {self.topic(kind)}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def device(creds: Credentials, settings: Settings) -> Iterator[Device]:
    d = Device(creds, settings)
    try:
        yield d
    finally:
        d.close()


@contextmanager
def running_worker(settings: Settings, index: int = 0) -> Iterator[IngestWorker]:
    worker = IngestWorker(settings, index)
    errors: list[BaseException] = []

    def _run() -> None:
        try:
            worker.run(report_every_s=3600)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=_run, daemon=True)
    thread.start()
    # Until SUBACK, what devices publish to a new (or restarted broker's) shared subscription is dropped.
    deadline = time.monotonic() + 60
    while not worker.subscribed.is_set() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    if errors:
        raise errors[0]
    assert worker.subscribed.is_set(), "ingest worker did not connect to the broker and subscribe"
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(15)
        assert not thread.is_alive(), "worker did not stop"
    if errors:
        raise errors[0]


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def count(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()  # type: ignore[call-overload]
    return int(row[0]) if row and row[0] is not None else 0
