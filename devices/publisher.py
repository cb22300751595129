"""The MQTT side of a device bridge: drains an ``OutboxBuffer`` to the broker, at least once.

One flush thread publishes the oldest pending entries of one kind as ONE JSON array (at most
``max_batch`` messages and ``max_bytes``), QoS 1, and removes them from the buffer only after a
successful PUBACK. One batch is in flight at a time, so messages reach the broker in buffer
order and a batch is never removed before the broker has it.

Across a disconnect paho keeps the unacknowledged PUBLISH in memory and sends it again (DUP)
after the reconnect; the batch stays in the buffer until that PUBACK comes. If the process
dies instead, the entries are still on disk and the next bridge sends them. Either way the broker
may get a message twice, which the contract allows: the server dedupes by (device_id, msg_id).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices.buffer import Entry, OutboxBuffer, OutboxError

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH: Final = 200
# Below the server's 256 KiB payload limit with room for the topic and MQTT headers.
DEFAULT_MAX_BYTES: Final = 200 * 1024
_IDLE_WAIT_S: Final = 1.0


class PublisherError(Exception):
    """The publisher cannot run as configured; the message says what to fix."""


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with an offset, millisecond precision."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    host: str
    port: int
    prefix: str
    device_id: str
    password: str
    # TLS when set: the CA file the broker's certificate is verified against.
    ca_file: str | None = None
    # MQTT protocol level: 5, or 4 (3.1.1) for a broker that serves only that (NATS).
    mqtt_version: int = 5

    def topic(self, kind: str) -> str:
        return f"{self.prefix}/dev/{self.device_id}/{kind}"


@dataclass(slots=True)
class _InFlight:
    mid: int
    ids: list[int]
    topic: str
    sent_connected_s: float  # connected time (see _connected_s) when published


def build_batch(entries: list[Entry], max_batch: int, max_bytes: int) -> tuple[list[Entry], bytes]:
    """The longest run of leading entries of the first entry's kind that fits; never empty.

    A single entry larger than ``max_bytes`` is still sent alone: the server dead-letters it with
    the reason, which is better than blocking the buffer behind it forever.
    """
    kind = entries[0].kind
    chosen: list[Entry] = []
    parts: list[bytes] = []
    size = 2  # the brackets
    for entry in entries[:max_batch]:
        if entry.kind != kind:
            break  # keep buffer order across kinds: the other kind goes in the next batch
        part = json.dumps(entry.payload, ensure_ascii=False, separators=(",", ":")).encode()
        added = len(part) + (1 if parts else 0)
        if chosen and size + added > max_bytes:
            break
        chosen.append(entry)
        parts.append(part)
        size += added
    return chosen, b"[" + b",".join(parts) + b"]"


class BufferedPublisher:
    """Connects as the device (MQTT 5, auto-reconnect with backoff) and flushes the buffer.

    ``start()`` runs paho's network thread and the flush thread; ``notify()`` after an append
    wakes the flush thread at once; ``close()`` drains for a bounded time and leaves the rest on
    disk.
    """

    def __init__(self, buffer: OutboxBuffer, target: BrokerTarget, *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_bytes: int = DEFAULT_MAX_BYTES, ack_timeout_s: float = 30.0,
                 refused_backoff_s: tuple[float, float] = (5.0, 300.0),
                 reconnect_delay_s: tuple[int, int] = (1, 30)) -> None:
        if max_batch < 1 or max_bytes < 64:
            raise PublisherError(f"max_batch must be >= 1 and max_bytes >= 64 (got {max_batch}, {max_bytes})")
        self._buffer = buffer
        self._target = target
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._ack_timeout_s = ack_timeout_s
        self._refused_min, self._refused_max = refused_backoff_s
        self._cond = threading.Condition()
        self._connected = False
        self._connected_total_s = 0.0  # time spent connected, closed periods only
        self._connected_since: float | None = None
        self._acks: dict[int, ReasonCode] = {}  # PUBACKs not yet applied, by mid
        # Batches handed to paho and not yet acknowledged (the current one and any given up on
        # after a PUBACK timeout, which paho still retries), and the one the flush thread awaits.
        self._outstanding: dict[int, _InFlight] = {}
        self._current: int | None = None
        self._wake = False
        self._refused_until = 0.0
        self._refused_delay = self._refused_min
        self._last_connect_error: str | None = None
        self._stopping = False
        self._drain_deadline: float | None = None
        self._thread: threading.Thread | None = None
        self.published = 0  # messages acknowledged by the broker (for logs and tests)
        self._downlink: list[str] = []  # downlink topics subscribed on every (re)connect
        # The broker binds each device account to the client id equal to its device id.
        protocol = mqtt.MQTTv5 if target.mqtt_version == 5 else mqtt.MQTTv311
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=target.device_id, protocol=protocol)
        self._client.username_pw_set(target.device_id, target.password)
        if target.ca_file:
            self._client.tls_set(ca_certs=target.ca_file)
        self._client.reconnect_delay_set(*reconnect_delay_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        # connect_async + loop_start: paho's thread retries the first connection too, so a bridge
        # started while the broker is down buffers and waits instead of failing.
        try:
            self._client.connect_async(self._target.host, self._target.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise PublisherError(f"invalid broker address {self._target.host}:{self._target.port}: {exc}") from exc
        self._client.loop_start()
        self._thread = threading.Thread(target=self._flush_loop, name=f"flush-{self._target.device_id}",
                                        daemon=True)
        self._thread.start()

    def listen(self, kind: str, on_message: Callable[[bytes], None]) -> None:
        """Also receive the device's own downlink ``kind`` (e.g. ``feedback``) on this session: a device
        has one session (its client id is its device id), so a second connection would take it over.
        Call before ``start()``; ``on_message`` runs on paho's network thread."""
        topic = self._target.topic(kind)
        self._downlink.append(topic)
        self._client.message_callback_add(topic, lambda _c, _u, m: on_message(bytes(m.payload)))

    def notify(self) -> None:
        """Something was appended to the buffer: flush now rather than at the next idle tick."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def close(self, drain_timeout_s: float = 5.0) -> None:
        """Publish what the broker takes within ``drain_timeout_s``, then disconnect; the rest stays on disk."""
        with self._cond:
            self._drain_deadline = time.monotonic() + drain_timeout_s
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(drain_timeout_s + 2.0)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)
        self._client.disconnect()
        self._client.loop_stop()
        remaining = self._pending_count()
        if remaining:
            log.info("%s: %d message(s) kept in %s for the next run", self._target.device_id, remaining,
                     self._buffer.path)

    # --- paho callbacks (paho's network thread; never call paho while holding self._cond) -----------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        where = f"{self._target.host}:{self._target.port}"
        if rc.is_failure:
            message = str(rc)
            # Logged once per distinct cause: paho keeps retrying with backoff, the log stays readable.
            if message != self._last_connect_error:
                log.error("%s: broker %s refused the connection (%s); check the device id and its password "
                          "(`cargotrace device rotate` issues a new one); retrying with backoff",
                          self._target.device_id, where, message)
            self._last_connect_error = message
            return
        self._last_connect_error = None
        log.info("%s: connected to %s", self._target.device_id, where)
        for topic in self._downlink:  # the device's one session also reads its downlink (feedback)
            client.subscribe(topic, qos=1)
        with self._cond:
            self._connected = True
            self._connected_since = time.monotonic()
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        with self._cond:
            was_connected = self._connected
            if self._connected_since is not None:
                self._connected_total_s += time.monotonic() - self._connected_since
            self._connected = False
            self._connected_since = None
            self._cond.notify_all()
        if was_connected and not self._stopping:
            log.warning("%s: disconnected from the broker (%s); buffering, reconnecting with backoff",
                        self._target.device_id, rc)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with self._cond:
            self._acks[mid] = rc
            self._cond.notify_all()

    # --- flush thread ---------------------------------------------------------------------------

    def _connected_s(self) -> float:
        """Total time connected so far: the PUBACK timeout only runs while a PUBACK is possible."""
        live = time.monotonic() - self._connected_since if self._connected_since is not None else 0.0
        return self._connected_total_s + live

    def _flush_loop(self) -> None:
        try:
            while self._step():
                pass
        except OutboxError as exc:
            # The buffer is the bridge's only durable state; without it nothing can be promised.
            log.critical("%s: %s; the bridge stops publishing", self._target.device_id, exc)

    def _step(self) -> bool:
        """One round of the flush thread; False when it should end."""
        with self._cond:
            if self._stopping:
                return False
            deadline = self._drain_deadline
            if deadline is not None and (time.monotonic() > deadline or not self._connected):
                return False
            acked = self._settle_locked()
        if acked:
            # Outside the lock: the fsync must not hold up paho's thread in on_publish.
            self._buffer.remove(acked)
        with self._cond:
            now = time.monotonic()
            if self._current is not None or not self._connected or now < self._refused_until:
                # Waiting for a PUBACK, a connection or the end of a refusal backoff.
                self._cond.wait(0.2 if self._current is not None else _IDLE_WAIT_S)
                return True
            self._wake = False  # an append from now on wakes the idle wait below
        if self._send_next():
            return True
        if deadline is not None:
            return False  # drained
        with self._cond:
            self._cond.wait_for(lambda: self._wake or self._stopping or self._drain_deadline is not None,
                                timeout=_IDLE_WAIT_S)
        return True

    def _settle_locked(self) -> list[int]:
        """Apply the PUBACKs received so far; returns the buffer ids the broker now has."""
        acked: list[int] = []
        for mid, rc in self._acks.items():
            batch = self._outstanding.pop(mid, None)
            if batch is None:
                continue  # not a batch of ours (cannot happen: every mid is registered on publish)
            if mid == self._current:
                self._current = None
            if not rc.is_failure:
                log.debug("%s: PUBACK for mid %d (%d message(s))", self._target.device_id, mid, len(batch.ids))
                acked.extend(batch.ids)
                self.published += len(batch.ids)
                self._refused_delay = self._refused_min
                continue
            log.error("%s: the broker refused %d message(s) on %s (%s); they stay in %s. Check that the "
                      "device's broker account may publish there (device id, topic prefix %r); next try in "
                      "%.0f s", self._target.device_id, len(batch.ids), batch.topic, rc, self._buffer.path,
                      self._target.prefix, self._refused_delay)
            self._refused_until = time.monotonic() + self._refused_delay
            self._refused_delay = min(self._refused_delay * 2, self._refused_max)
        self._acks.clear()
        current = self._outstanding.get(self._current) if self._current is not None else None
        if current is not None and self._connected \
                and self._connected_s() - current.sent_connected_s > self._ack_timeout_s:
            # Paho still holds that PUBLISH (and its PUBACK would still settle it); send a new copy
            # so that one lost acknowledgement cannot stall the buffer.
            log.warning("%s: no PUBACK for %d message(s) after %.0f s connected; sending them again",
                        self._target.device_id, len(current.ids), self._ack_timeout_s)
            self._current = None
        return acked

    def _send_next(self) -> bool:
        """Publish the next batch; False when the buffer is empty."""
        entries = self._buffer.pending(self._max_batch)
        if not entries:
            return False
        batch, payload = build_batch(entries, self._max_batch, self._max_bytes)
        topic = self._target.topic(batch[0].kind)
        info = self._client.publish(topic, payload, qos=1)
        # NO_CONN is fine: paho keeps the message and sends it after the reconnect.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("%s: cannot hand %d message(s) to the MQTT client (%s); retrying in %.0f s",
                      self._target.device_id, len(batch), mqtt.error_string(info.rc), self._refused_min)
            with self._cond:
                self._refused_until = time.monotonic() + self._refused_min
            return True
        with self._cond:
            # Registered before the flush thread next settles acks, so a fast PUBACK is not missed.
            self._outstanding[info.mid] = _InFlight(info.mid, [e.id for e in batch], topic, self._connected_s())
            self._current = info.mid
        log.debug("%s: published %d message(s) as mid %d (%d bytes)", self._target.device_id, len(batch), info.mid,
                  len(payload))
        return True

    def _pending_count(self) -> int:
        try:
            return len(self._buffer)
        except OutboxError:
            return 0
