"""One ingest worker: MQTT 5 shared subscription -> batch -> one transaction -> ack.

At-least-once in, exactly-once applied: a message is acknowledged to the broker only after the
transaction that stored it (or its dead letter) has committed, and ``(device_id, msg_id)``
identity makes a redelivery a no-op. The MQTT 5 Receive Maximum bounds how many un-acked
messages the broker sends us, and ``ingest_max_unacked_bytes`` how many bytes: above it the
network thread stops reading (TCP back-pressure onto the broker) until a batch is acknowledged,
so 1 MiB payloads cannot push a worker past its memory bound either.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.db import StoreError, connect
from ingest.decode import DOWNLINK_KINDS, DeadLetter, Inbound
from ingest.pipeline import PipelineConfig, process_batch
from ingest.rfid_sweep import sweep
from ingest.store import BatchResult, store_dead_letters
from runtime import metrics
from runtime.mqtt_tls import apply_tls
from runtime.settings import Settings

log = logging.getLogger("cargotrace.ingest")

_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
              psycopg.errors.LockNotAvailable)


def subscription(settings: Settings) -> str:
    return f"$share/{settings.ingest_group}/{settings.topic_prefix}/dev/+/+"


@dataclass(frozen=True, slots=True)
class _Received:
    message: Inbound
    generation: int  # the MQTT connection it came on: acks are only valid on that connection


@dataclass
class Counters:
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0


class IngestWorker:
    def __init__(self, settings: Settings, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.client_id = f"{settings.ingest_client_prefix}-{index}"
        self.pipeline = PipelineConfig.from_settings(settings)
        self.counters = Counters()
        self._inbox: queue.SimpleQueue[_Received] = queue.SimpleQueue()
        self._generation = 0
        self._connected = threading.Event()
        self.subscribed = threading.Event()  # SUBACK received on the current connection
        self.connections = 0  # sessions opened so far (each one subscribes again)
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._held = threading.Condition()
        self._held_bytes = 0  # payload bytes received and not yet acknowledged or discarded
        self.peak_held_bytes = 0  # the most ever held at once (shown by tests and benchmarks)
        self._in_batch = 0  # messages of the batch being stored, not yet acknowledged
        # Received and not yet acknowledged: waiting in the inbox or in the batch being stored.
        metrics.IN_FLIGHT.labels(worker=self.client_id).set_function(lambda: self._inbox.qsize() + self._in_batch)
        metrics.UNACKED_BYTES.labels(worker=self.client_id).set_function(lambda: self._held_bytes)
        self._client = self._make_client()

    # --- MQTT ------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        client.username_pw_set(self.settings.mqtt_service_user, self.settings.mqtt_service_password)
        apply_tls(client, self.settings)
        # Back quickly after a broker restart: Mosquitto 2.0.11 restores our persistent session but
        # not its shared subscription, so whatever devices publish until we re-subscribe is lost;
        # a 2 s cap keeps that window short (tests/integration/test_broker_restart.py).
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    _p: object) -> None:
        if reason.is_failure:
            log.error("%s: broker refused the connection: %s (check the service account; "
                      "`cargotrace up` creates it)", self.client_id, reason)
            return
        self._generation += 1
        self.subscribed.clear()
        if self.connections and flags.session_present:
            # Always subscribe again, even though the broker says it kept our session: after its
            # restart Mosquitto 2.0.11 has the session and its queue but not the $share subscription.
            log.info("%s: reconnected to our session; re-subscribing", self.client_id)
        elif self.connections:
            log.warning("%s: the broker lost our session (restarted without persistence?); "
                        "re-subscribing, messages queued for it before are gone", self.client_id)
        self.connections += 1
        metrics.CONNECTIONS.labels(worker=self.client_id).inc()
        # Retain handling 2: no retained messages on subscribe (those are device configs, downlink).
        # Retain as published: a device's retained publish must be recognisable to be refused.
        client.subscribe(subscription(self.settings),
                         options=SubscribeOptions(qos=1, retainHandling=2, retainAsPublished=True))
        self._connected.set()
        log.info("%s: connected to %s:%s, subscribed to %s", self.client_id, self.settings.mqtt_host,
                 self.settings.mqtt_client_port, subscription(self.settings))

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reasons: list[ReasonCode],
                      _p: object) -> None:
        if all(not r.is_failure for r in reasons):
            self.subscribed.set()
        else:
            log.error("%s: the broker refused the subscription: %s", self.client_id, reasons)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode,
                       _p: object) -> None:
        self._connected.clear()
        self.subscribed.clear()
        self._generation += 1  # whatever was received before is redelivered on the next session
        if not self._stop.is_set():
            log.warning("%s: disconnected from the broker (%s); reconnecting", self.client_id, reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        with self._held:
            # Blocks paho's network thread while too much is held: nothing more is read from the
            # socket until the main loop acknowledges a batch (bounded wait: keepalive must go on).
            self._held.wait_for(lambda: self._held_bytes < self.settings.ingest_max_unacked_bytes
                                or self._stop.is_set(), timeout=20)
            self._held_bytes += len(payload)
            self.peak_held_bytes = max(self.peak_held_bytes, self._held_bytes)
        self._inbox.put(_Received(Inbound(msg.topic, payload, datetime.now(UTC), msg.mid, msg.qos,
                                          bool(msg.retain)), self._generation))

    def _release(self, released: int) -> None:
        with self._held:
            self._held_bytes -= released
            self._held.notify_all()

    def connect(self, timeout: float = 10.0) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.ingest_session_expiry_s
        props.ReceiveMaximum = self.settings.ingest_inflight
        try:
            self._client.connect(self.settings.mqtt_host, self.settings.mqtt_client_port, keepalive=30,
                                 clean_start=False, properties=props)
        except OSError as exc:
            raise StoreError(f"cannot reach the MQTT broker at {self.settings.mqtt_host}:"
                             f"{self.settings.mqtt_client_port}: {exc}. Start it with `cargotrace up` or set "
                             "CARGOTRACE_MQTT_HOST/CARGOTRACE_MQTT_PORT.") from None
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            raise StoreError(f"the MQTT broker at {self.settings.mqtt_host}:{self.settings.mqtt_client_port} did not "
                             "accept the ingest service account in time (see the log above)")

    # --- database --------------------------------------------------------------------------------

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            # The ingest role (least privilege) when `cargotrace up` created one, else database_url.
            self._conn = connect(self.settings.ingest_url, application_name=self.client_id)
        return self._conn

    def _drop_db(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _store(self, messages: Sequence[Inbound]) -> BatchResult:
        conn = self._db()
        with conn.transaction(), conn.cursor() as cur:
            return process_batch(cur, messages, self.pipeline)

    def _store_isolated(self, messages: Sequence[Inbound]) -> BatchResult:
        """A batch failed for a reason that is not transient: apply its messages one by one so that
        one message the database refuses becomes a dead letter and the others still land."""
        applied, dups, dead = [], 0, 0
        reasons: tuple[tuple[str, str], ...] = ()
        for message in messages:
            try:
                result = self._store([message])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                self._db().rollback()
                letter = DeadLetter(message.received_at, message.topic, None, "storage_error",
                                    str(exc).strip().splitlines()[0][:500], None, message.payload,
                                    len(message.payload))
                result = self._store_dead([letter])
            applied += result.applied
            dups += result.duplicates
            dead += result.dead_letters
            reasons += result.dead_reasons
        return BatchResult(applied, dups, dead, reasons)

    def _store_dead(self, letters: list[DeadLetter]) -> BatchResult:
        conn = self._db()
        with conn.transaction(), conn.cursor() as cur:
            store_dead_letters(cur, letters)
        return BatchResult([], 0, len(letters), tuple((d.reason, d.topic) for d in letters))

    def apply(self, messages: Sequence[Inbound]) -> BatchResult:
        """Store a batch, retrying transient failures until it commits or the worker is stopped."""
        delay = 0.2
        while True:
            try:
                try:
                    return self._store(messages)
                except _TRANSIENT:
                    raise
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    log.warning("%s: batch of %d refused by the database (%s); applying one by one",
                                self.client_id, len(messages), str(exc).strip().splitlines()[0])
                    self._db().rollback()
                    return self._store_isolated(messages)
            except (*_TRANSIENT, psycopg.OperationalError, StoreError) as exc:
                if isinstance(exc, psycopg.OperationalError | StoreError):
                    self._drop_db()
                if self._stop.is_set():
                    raise
                log.warning("%s: database unavailable (%s); retrying in %.1fs, nothing is acked meanwhile",
                            self.client_id, str(exc).strip().splitlines()[0], delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # --- main loop -------------------------------------------------------------------------------

    def _take(self) -> tuple[list[Inbound], int]:
        wait = self.settings.ingest_batch_wait_ms / 1000
        try:
            first = self._inbox.get(timeout=0.25)
        except queue.Empty:
            return [], self._generation
        batch = [first]
        deadline = time.monotonic() + wait
        while len(batch) < self.settings.ingest_batch_max:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self._inbox.get(timeout=left))
                except queue.Empty:
                    break
        generation = self._generation
        # Messages from a connection that has since dropped are redelivered on the new one.
        current = [r.message for r in batch if r.generation == generation]
        self._release(sum(len(r.message.payload) for r in batch if r.generation != generation))
        return current, generation

    def _ack(self, messages: Sequence[Inbound], generation: int) -> None:
        if generation != self._generation:
            return  # the connection dropped after commit: the broker redelivers, identity dedupes
        for m in messages:
            if m.qos > 0:
                self._client.ack(m.mid, m.qos)

    def _clear_retained(self, messages: Sequence[Inbound]) -> None:
        """Delete the retained copies devices left (dead-lettered already): empty retained publish.

        Never the server's own retained downlink (config, tasks): the wildcard delivers it here too."""
        for topic in {m.topic for m in messages if m.retain and m.payload
                      and m.topic.rsplit("/", 1)[-1] not in DOWNLINK_KINDS}:
            self._client.publish(topic, b"", qos=1, retain=True)

    def run_once(self) -> int:
        batch, generation = self._take()
        if not batch:
            return 0
        # Counted here, not in a transport's receive callback, so that every transport is counted.
        metrics.RECEIVED.labels(worker=self.client_id).inc(len(batch))
        self._in_batch = len(batch)
        started = time.perf_counter()
        try:
            result = self.apply(batch)
            committed = time.perf_counter()
            self._clear_retained(batch)
            self._ack(batch, generation)
        finally:
            self._in_batch = 0
            self._release(sum(len(m.payload) for m in batch))
        self.counters.applied += len(result.applied)
        self.counters.duplicates += result.duplicates
        self.counters.dead_letters += result.dead_letters
        self.counters.batches += 1
        self._observe(len(batch), committed - started, result)
        return len(batch)

    def _observe(self, size: int, commit_s: float, result: BatchResult) -> None:
        worker = self.client_id
        metrics.BATCH_SIZE.labels(worker=worker).observe(size)
        metrics.COMMIT_SECONDS.labels(worker=worker).observe(commit_s)
        metrics.APPLIED.labels(worker=worker).inc(len(result.applied))
        metrics.DUPLICATES.labels(worker=worker).inc(result.duplicates)
        for reason, topic in result.dead_reasons:
            metrics.DEAD_LETTERS.labels(worker=worker, reason=reason, kind=metrics.kind_label(topic)).inc()

    def stop(self) -> None:
        self._stop.set()
        with self._held:
            self._held.notify_all()

    def sweep_gates(self) -> None:
        """Close RFID passages (a tag silent long enough); a failure is retried next second."""
        try:
            result = sweep(self._db())
        except (psycopg.Error, StoreError) as exc:
            log.warning("%s: RFID sweep failed (%s); retrying", self.client_id, str(exc).strip().splitlines()[0])
            self._drop_db()
            return
        if result.movements:
            log.debug("%s: %d RFID passages, %d movements", self.client_id, result.passages, result.movements)

    def run(self, report_every_s: float = 10.0) -> None:
        exporter = metrics.serve_worker_metrics(self.settings.ingest_metrics_port, self.index,
                                                self.settings.ingest_metrics_host)
        try:
            self._run(report_every_s)
        finally:
            if exporter is not None:
                exporter.shutdown()
                exporter.server_close()

    def _run(self, report_every_s: float) -> None:
        self.connect()
        last_report, last_applied = time.monotonic(), 0
        last_sweep = time.monotonic()
        try:
            self._db()  # fail fast with advice if the database is not there
            while not self._stop.is_set():
                self.run_once()
                now = time.monotonic()
                if now - last_sweep >= self.settings.rfid_sweep_interval_s:
                    self.sweep_gates()
                    last_sweep = now
                if now - last_report >= report_every_s:
                    rate = (self.counters.applied - last_applied) / (now - last_report)
                    log.info("%s: %.0f msg/s applied; totals: %d applied, %d duplicates, %d dead letters",
                             self.client_id, rate, self.counters.applied, self.counters.duplicates,
                             self.counters.dead_letters)
                    last_report, last_applied = now, self.counters.applied
        finally:
            self.close_transport()
            self._drop_db()

    def close_transport(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def ensure_sessions(settings: Settings, workers: int) -> None:
    """Create the workers' persistent sessions (and their shared subscription) so that whatever
    devices publish before the workers first run, or while they are down, is queued for them."""
    for index in range(workers):
        worker = IngestWorker(settings, index)
        worker.connect()
        worker.stop()
        worker._client.disconnect()
        worker._client.loop_stop()
