"""One database listener per API process, fanning the events outbox out to every open stream.

The hub holds the only ``LISTEN cargotrace_events`` connection of the process. On every
notification (and at least once a second, which covers a lost one) it reads the outbox rows after
the last id it delivered, once, and puts them into each subscriber's bounded queue. A stream
replays history (a client resuming with Last-Event-ID) on a pooled connection, then follows its
queue. A subscriber that falls ``QUEUE_MAX`` events behind is dropped: its client reconnects with
Last-Event-ID and catches up from the table, so a slow client cannot make the process hoard events.

It also keeps the stream caps: at most ``per_token`` open streams per API token and ``total`` in
the process (beyond them, 429).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from api.store.events import CHANNEL, REPLAY_PAGE, OutboxEvent, events_after, head

log = logging.getLogger("cargotrace.api.hub")

QUEUE_MAX = 10_000
POLL_S = 1.0
RECONNECT_S = 2.0
APPLICATION_NAME = "cargotrace-events"


class StreamLimitError(Exception):
    """Too many open streams, for this token or in total."""


@dataclass(eq=False)
class Subscriber:
    token_id: int
    queue: asyncio.Queue[OutboxEvent] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    overflowed: bool = False


class EventHub:
    def __init__(self, database_url: str, *, per_token: int, total: int) -> None:
        self._url = database_url
        self._per_token = per_token
        self._total = total
        self._subscribers: set[Subscriber] = set()
        self._per_token_open: Counter[int] = Counter()
        self._last: int | None = None  # the outbox id delivered up to; None until first connected
        self._live = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle (the app's lifespan) ---------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- subscribers ----------------------------------------------------------------------------

    def subscribe(self, token_id: int) -> Subscriber:
        self.check_capacity(token_id)
        sub = Subscriber(token_id)
        self._subscribers.add(sub)
        self._per_token_open[token_id] += 1
        return sub

    def check_capacity(self, token_id: int) -> None:
        """Raise StreamLimitError when one more stream of ``token_id`` would pass a cap."""
        if len(self._subscribers) >= self._total:
            raise StreamLimitError(f"this API process already serves {self._total} event streams; retry later")
        if self._per_token_open[token_id] >= self._per_token:
            raise StreamLimitError(f"this token already has {self._per_token} open event streams; close one first")

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            self._per_token_open[sub.token_id] -= 1
            if self._per_token_open[sub.token_id] <= 0:
                del self._per_token_open[sub.token_id]

    @property
    def open_streams(self) -> int:
        return len(self._subscribers)

    async def wait_live(self, timeout: float) -> bool:
        """Wait for the hub's first database connection; False if it does not come in time."""
        try:
            await asyncio.wait_for(self._live.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def head(self) -> int:
        """The id delivered up to: a subscriber added now receives every event after it."""
        assert self._last is not None, "wait_live first"
        return self._last

    # --- the listener ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                log.warning("event listener lost its database connection (%s); reconnecting", exc)
                await asyncio.sleep(RECONNECT_S)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=5,
                                                          application_name=APPLICATION_NAME) as conn:
            # LISTEN before reading the head: an event committed in between is then both above the
            # head and announced, never neither.
            await conn.execute(f"LISTEN {CHANNEL}")
            latest = await head(conn)
            # First connection, or the outbox was emptied/restored below what was delivered (its ids
            # restart): continue from the table's head, or no new event would ever go out.
            if self._last is None or latest < self._last:
                self._last = latest
            self._live.set()
            while True:
                await self._deliver(conn)
                async for _ in conn.notifies(timeout=POLL_S, stop_after=1):
                    pass

    async def _deliver(self, conn: psycopg.AsyncConnection) -> None:
        assert self._last is not None
        while True:
            batch = await events_after(conn, self._last, REPLAY_PAGE)
            for event in batch:
                for sub in list(self._subscribers):
                    try:
                        sub.queue.put_nowait(event)
                    except asyncio.QueueFull:
                        sub.overflowed = True
                self._last = event.id
            if len(batch) < REPLAY_PAGE:
                return
