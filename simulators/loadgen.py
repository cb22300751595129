"""Load generation over the device contract: QoS 1 publishes whose PUBACKs are counted.

A publish counts only when the broker acknowledged it (``mosquitto_pub -l`` silently loses
messages under load, see VERIFIED.md), so a benchmark knows exactly what the broker holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

Payload = Callable[[int], bytes]


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class DeviceLogin:
    device_id: str
    password: str


def env_payload(device_id: str, base_ms: int) -> Payload:
    """A realistic cold-chain reading; msg_id and ts derive from the sequence number."""
    def make(seq: int) -> bytes:
        return orjson.dumps({"msg_id": f"{device_id}-{seq:08d}", "ts": base_ms + seq,
                             "temp_c": round(4.0 + (seq % 50) / 25, 2), "rh_pct": 55.5})
    return make


class CountingPublisher:
    """One device connection publishing QoS 1 and counting PUBACKs (with a bounded window)."""

    def __init__(self, host: str, port: int, login: DeviceLogin, topic: str, window: int = 1000) -> None:
        self.topic = topic
        self.acked = 0
        self.refused = 0
        self._window = threading.Semaphore(window)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=login.device_id,
                                   protocol=mqtt.MQTTv5)
        self._client.username_pw_set(login.device_id, login.password)
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._connected = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        try:
            self._client.connect(host, port, keepalive=60)
        except OSError as exc:
            raise LoadError(f"cannot reach the broker at {host}:{port}: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(10):
            self.close()
            raise LoadError(f"the broker refused device {login.device_id!r} (credentials?)")

    def _on_publish(self, _c: mqtt.Client, _u: object, _mid: int, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            self.refused += 1
        else:
            self.acked += 1
        self._window.release()

    def publish(self, payload: bytes) -> None:
        self._window.acquire()
        info = self._client.publish(self.topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._window.release()
            raise LoadError(f"publish failed locally: {mqtt.error_string(info.rc)}")

    def wait_acked(self, expected: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acked + self.refused < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.refused:
            raise LoadError(f"the broker refused {self.refused} publishes to {self.topic}")
        if self.acked < expected:
            raise LoadError(f"only {self.acked} of {expected} publishes to {self.topic} were acknowledged")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def publish_backlog(host: str, port: int, logins: Iterable[DeviceLogin], topic_of: Callable[[str], str],
                    per_device: int, payload_of: Callable[[str], Payload],
                    progress: Callable[[int], None] | None = None) -> int:
    """Publish ``per_device`` messages from each device; returns the count the broker acknowledged."""
    total = 0
    for login in logins:
        pub = CountingPublisher(host, port, login, topic_of(login.device_id))
        make = payload_of(login.device_id)
        try:
            for seq in range(per_device):
                pub.publish(make(seq))
                if progress and seq % 5000 == 4999:
                    progress(5000)
            pub.wait_acked(per_device)
        finally:
            pub.close()
        if progress:
            progress(per_device % 5000)
        total += pub.acked
    return total
