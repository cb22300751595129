"""Ingest from NATS JetStream: one durable pull consumer shared by every worker on every host.

Each worker fetches a batch, applies it in one transaction (the shared ``IngestWorker.apply``),
and acks each message only after the commit. A worker that dies, hangs or loses its network
before acking leaves its messages un-acked: after ``ack_wait`` JetStream redelivers them to
whichever worker fetches next, and ``(device_id, msg_id)`` identity makes the second application
a no-op. ``max_ack_pending`` (``CARGOTRACE_INGEST_INFLIGHT``) caps the un-acked messages of the
consumer, which bounds the memory of all workers together whatever the backlog.

nats-py is asyncio; the worker loop is synchronous (psycopg, the shared pipeline), so the NATS
connection lives on an event loop in a helper thread and the worker calls into it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from devices.nats_accounts import subject_prefix
from ingest.db import StoreError
from ingest.decode import Inbound
from ingest.worker import IngestWorker
from runtime.settings import Settings

log = logging.getLogger("cargotrace.ingest")

T = TypeVar("T")
_CONNECT_TIMEOUT_S = 60.0


def data_subjects(settings: Settings) -> str:
    """Every device's data subjects: ``<prefix>.dev.<device>.<kind>`` (the downlink ``config`` too,
    which the workers skip as today's shared subscription receives it and the pipeline ignores)."""
    return f"{subject_prefix(settings)}.dev.*.*"


def subject_to_topic(subject: str) -> str:
    return subject.replace(".", "/")


class AsyncBridge:
    """An asyncio loop in a daemon thread; ``call`` runs a coroutine on it and waits for the result."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def connect_service(settings: Settings, name: str, *, reconnect: bool = True) -> NatsClient:
    """The service account on every node of the cluster (the client fails over between them).

    ``reconnect=False`` for one-shot checks: fail at once when no node answers."""
    try:
        return await nats.connect(servers=settings.nats_urls(), user=settings.mqtt_service_user,
                                  password=settings.mqtt_service_password, name=name,
                                  connect_timeout=5 if reconnect else 2,
                                  max_reconnect_attempts=-1 if reconnect else 0, reconnect_time_wait=1,
                                  allow_reconnect=reconnect)
    except (OSError, nats.errors.Error) as exc:
        raise StoreError(f"cannot reach the NATS cluster at {', '.join(settings.nats_urls())} as "
                         f"{settings.mqtt_service_user!r}: {exc!r}. Start it with `cargotrace up --cluster 3` "
                         "or set CARGOTRACE_NATS_SERVERS") from None


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(name=settings.nats_stream, subjects=[data_subjects(settings)],
                        # A work queue: a message is removed once acked, so the stream is a buffer
                        # that holds what the workers have not applied yet, not a second copy.
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                        num_replicas=settings.nats_replicas)


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(durable_name=settings.nats_durable, ack_policy=AckPolicy.EXPLICIT,
                          ack_wait=settings.nats_ack_wait_s, max_ack_pending=settings.ingest_inflight,
                          max_waiting=512)


async def _ensure_stream(settings: Settings) -> None:
    nc = await connect_service(settings, "cargotrace-setup")
    try:
        js = nc.jetstream(timeout=30)
        try:
            await js.stream_info(settings.nats_stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(stream_config(settings))
        try:
            await js.consumer_info(settings.nats_stream, settings.nats_durable)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(settings.nats_stream, consumer_config(settings))
    finally:
        await nc.close()


def ensure_stream(settings: Settings) -> None:
    """Idempotent: the replicated stream of device messages and the workers' durable consumer."""
    asyncio.run(_ensure_stream(settings))


class JetStreamWorker(IngestWorker):
    """``IngestWorker`` with JetStream receive and ack; storing, retries and counters are shared."""

    def __init__(self, settings: Settings, index: int = 0) -> None:
        super().__init__(settings, index)
        self._bridge = AsyncBridge(f"nats-{self.client_id}")
        self._nc: NatsClient | None = None
        self._sub: Any = None
        self._unacked: dict[int, Msg] = {}  # fetched and not yet acked, by the mid given to Inbound
        self._next_mid = 0

    def connect(self, timeout: float = _CONNECT_TIMEOUT_S) -> None:
        async def go() -> None:
            self._nc = await connect_service(self.settings, self.client_id)
            js = self._nc.jetstream(timeout=30)
            self._sub = await js.pull_subscribe_bind(self.settings.nats_durable, self.settings.nats_stream)

        try:
            self._bridge.call(go(), timeout)
        except FutureTimeout:
            raise StoreError(f"{self.client_id}: no NATS connection within {timeout:g} s") from None
        except nats.js.errors.NotFoundError:
            raise StoreError(f"stream {self.settings.nats_stream} or consumer {self.settings.nats_durable} does "
                             "not exist; `cargotrace up --cluster 3` creates them") from None
        self._connected.set()
        log.info("%s: consuming %s/%s from %s", self.client_id, self.settings.nats_stream,
                 self.settings.nats_durable, ", ".join(self.settings.nats_urls()))

    def _take(self) -> tuple[list[Inbound], int]:
        async def fetch() -> list[Msg]:
            try:
                msgs: list[Msg] = await self._sub.fetch(self.settings.ingest_batch_max, timeout=0.25)
            except (TimeoutError, nats.errors.TimeoutError):
                return []
            return msgs

        try:
            msgs = self._bridge.call(fetch(), 60)
        except (nats.errors.Error, FutureTimeout) as exc:
            # Disconnected or failing over: nothing fetched is lost, un-acked messages come back.
            log.warning("%s: fetch failed (%r); retrying", self.client_id, exc)
            self._stop.wait(0.5)
            return [], 0
        received = datetime.now(UTC)
        batch = []
        for msg in msgs:
            self._next_mid += 1
            self._unacked[self._next_mid] = msg
            batch.append(Inbound(subject_to_topic(msg.subject), bytes(msg.data), received, self._next_mid, 1))
        return batch, 0

    def _ack(self, messages: Sequence[Inbound], generation: int) -> None:
        held = [self._unacked.pop(m.mid) for m in messages]

        async def ack_all() -> None:
            for msg in held:
                await msg.ack()

        try:
            self._bridge.call(ack_all(), 60)
        except (nats.errors.Error, FutureTimeout) as exc:
            # Committed but not acked: redelivered after ack_wait and de-duplicated by identity.
            log.warning("%s: ack failed after commit (%r); the redelivery will be a duplicate", self.client_id, exc)

    def _release(self, released: int) -> None:
        """No byte accounting here: JetStream's max_ack_pending and the fetch size bound what is held."""

    def close_transport(self) -> None:
        nc = self._nc
        if nc is not None:
            try:
                self._bridge.call(nc.close(), 10)
            except (nats.errors.Error, FutureTimeout) as exc:
                log.warning("%s: closing the NATS connection failed (%r)", self.client_id, exc)
        self._bridge.close()
