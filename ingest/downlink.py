"""The downlink publisher (CONTRACT 3.1): retained task lists and scan feedback, server to scanner.

Ingest and the API only write rows: a new ``device_task_versions.version`` when a device's open
tasks change, a ``scan_feedback`` row when a scan was refused or closed a task. This publisher is
woken by their NOTIFY at commit, publishes over the platform's service account (MQTT 5, QoS 1) and
records what the broker acknowledged, so a restart republishes exactly what is missing.

A task list is published under the device's row lock, so its version and its content agree and
two publishers cannot put an older list over a newer one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest.db import StoreError, connect
from runtime.settings import Settings

log = logging.getLogger("cargotrace.downlink")

CHANNEL = "cargotrace_downlink"
_BATCH = 500
_ACK_TIMEOUT_S = 10.0


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def task_list(cur: psycopg.Cursor, device_id: str, version: int) -> dict[str, Any]:
    rows = cur.execute("SELECT task_id, type, ref, sku, gtin, lot, qty - done_qty, from_location, to_location, "
                       "due_at FROM tasks WHERE device_id = %s AND status = 'open' ORDER BY due_at NULLS LAST, "
                       "task_id", (device_id,)).fetchall()
    return {"version": version, "tasks": [
        {"task_id": r[0], "type": r[1], "ref": r[2], "sku": r[3], "gtin": r[4], "lot": r[5], "qty": _number(r[6]),
         "from_location": r[7], "to_location": r[8], "due_at": r[9].isoformat() if r[9] else None} for r in rows]}


class DownlinkPublisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self.published_lists = 0
        self.published_feedback = 0
        self._connected = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cargotrace-downlink-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv5)
        self._client.username_pw_set(settings.mqtt_service_user, settings.mqtt_service_password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=15)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *_: self._connected.clear()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            log.error("downlink: broker refused the service account: %s", reason)
            return
        self._connected.set()

    def connect(self, timeout: float = 10.0) -> None:
        try:
            self._client.connect(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        except OSError as exc:
            raise StoreError(f"downlink: cannot reach the MQTT broker: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            raise StoreError("downlink: the broker did not accept the service account in time")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def clear_task_list(self, device_id: str) -> None:
        """Delete a device's retained task list (an empty retained publish), e.g. when it is removed."""
        info = self._client.publish(f"{self.prefix}/dev/{device_id}/tasks", b"", qos=1, retain=True)
        if not self._acked([info]):
            raise StoreError(f"downlink: the broker did not acknowledge clearing {device_id}'s task list")

    def _publish(self, topic: str, payload: dict[str, Any], retain: bool) -> mqtt.MQTTMessageInfo:
        return self._client.publish(topic, orjson.dumps(payload), qos=1, retain=retain)

    @staticmethod
    def _acked(infos: list[mqtt.MQTTMessageInfo]) -> bool:
        deadline = time.monotonic() + _ACK_TIMEOUT_S
        for info in infos:
            info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
        return all(info.is_published() for info in infos)

    def publish_task_lists(self, conn: psycopg.Connection) -> int:
        done = 0
        with conn.transaction(), conn.cursor() as cur:
            due = cur.execute("SELECT device_id, version FROM device_task_versions WHERE version > published_version "
                              "ORDER BY device_id LIMIT %s FOR UPDATE SKIP LOCKED", (_BATCH,)).fetchall()
            infos = [self._publish(f"{self.prefix}/dev/{device_id}/tasks", task_list(cur, device_id, int(version)),
                                   retain=True) for device_id, version in due]
            if not self._acked(infos):
                raise StoreError("downlink: the broker did not acknowledge the task lists in time")
            for device_id, version in due:
                cur.execute("UPDATE device_task_versions SET published_version = %s WHERE device_id = %s",
                            (version, device_id))
                done += 1
        self.published_lists += done
        return done

    def publish_feedback(self, conn: psycopg.Connection) -> int:
        with conn.transaction(), conn.cursor() as cur:
            rows = cur.execute("SELECT id, device_id, msg_id, ok, reason, task_id FROM scan_feedback "
                               "WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                               (_BATCH,)).fetchall()
            infos = [self._publish(f"{self.prefix}/dev/{r[1]}/feedback",
                                   {"msg_id": r[2], "ok": r[3], "reason": r[4], "task_id": r[5]}, retain=False)
                     for r in rows]
            if not self._acked(infos):
                raise StoreError("downlink: the broker did not acknowledge the feedback in time")
            if rows:
                cur.execute("UPDATE scan_feedback SET published_at = clock_timestamp() WHERE id = ANY(%s)",
                            ([r[0] for r in rows],))
        self.published_feedback += len(rows)
        return len(rows)

    def publish_pending(self, conn: psycopg.Connection) -> int:
        """Publish everything owed; feedback first (a scanner is waiting to beep)."""
        total = 0
        while True:
            n = self.publish_feedback(conn) + self.publish_task_lists(conn)
            total += n
            if n == 0:
                return total

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Until ``stop``: publish, then sleep until a NOTIFY (or ``idle_s``, to retry after an error)."""
        while not stop.is_set():
            try:
                with connect(self.settings.database_url, autocommit=True,
                             application_name="cargotrace-downlink") as conn, \
                        connect(self.settings.database_url, autocommit=True) as listener:
                    listener.execute(f"LISTEN {CHANNEL}")
                    while not stop.is_set():
                        self.publish_pending(conn)
                        for _ in listener.notifies(timeout=idle_s, stop_after=1):
                            pass
            except (StoreError, psycopg.Error) as exc:
                log.warning("downlink: %s; retrying", exc)
                stop.wait(idle_s)


@contextlib.contextmanager
def running_downlink(settings: Settings) -> Iterator[DownlinkPublisher]:
    """A publisher on its own thread, for the CLI, tests and benchmarks."""
    publisher = DownlinkPublisher(settings)
    publisher.connect()
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,), name="downlink", daemon=True)
    thread.start()
    try:
        yield publisher
    finally:
        stop.set()
        thread.join(10)
        publisher.close()


def downlink_loop(settings: Settings, stop: threading.Event, retry_s: float = 5.0) -> None:
    """The publisher for ``cargotrace run``/``ingest``: (re)connects to the broker until ``stop``."""
    while not stop.is_set():
        publisher = DownlinkPublisher(settings)
        try:
            publisher.connect()
        except StoreError as exc:
            log.warning("%s; retrying in %.0f s", exc, retry_s)
            stop.wait(retry_s)
            continue
        try:
            publisher.run(stop)
        finally:
            publisher.close()
