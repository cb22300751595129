"""The runner: one MQTT connection per simulated device, publishing its model's messages on time.

Each device gets its own ``aiomqtt.Client`` (MQTT 5, username = device id, its own password), as
in the field, so the broker's per-device ACL is exercised and a thousand devices run in one
process. A message is due at wall time ``start + (at - sim_start) / speedup``; the runner
publishes it at QoS 1 and counts it only when the broker's PUBACK came back. Each device keeps
at most ``window`` publishes in flight, which bounds memory when the broker is slow.

Timing starts once every device is connected, so connecting a thousand devices does not eat into
the simulated day.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import ssl
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiomqtt
from rich.console import Console
from rich.live import Live
from rich.table import Table

from simulators.clock import SimClock
from simulators.messages import Message


class RunnerError(RuntimeError):
    pass


@dataclass
class RunStats:
    devices: int = 0
    connected: int = 0
    published: Counter[str] = field(default_factory=Counter)  # by label, acknowledged by the broker
    failed: int = 0
    in_flight: int = 0
    sim_now: datetime | None = None
    started: float | None = None  # time.monotonic() when publishing started
    finished: float | None = None

    @property
    def acked(self) -> int:
        return sum(self.published.values())

    @property
    def elapsed_s(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _raise_fd_limit(wanted: int) -> None:
    """A thousand sockets need more than the common soft limit of 1024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _topic(prefix: str, device_id: str, kind: str) -> str:
    return f"{prefix}/dev/{device_id}/{kind}"


def stats_table(stats: RunStats, clock: SimClock, title: str) -> Table:
    table = Table(title=title, show_header=False)
    sim = f"{stats.sim_now:%Y-%m-%d %H:%M:%S} UTC" if stats.sim_now else "-"
    done = clock.offset(stats.sim_now) / clock.span_s * 100 if stats.sim_now else 0.0
    table.add_row("devices connected", f"{stats.connected}/{stats.devices}")
    table.add_row("simulated clock", f"{sim} ({min(done, 100):.0f} % of the window, x{clock.speedup:g})")
    table.add_row("acknowledged", f"{stats.acked} ({stats.rate:.0f} msg/s), in flight {stats.in_flight}, "
                                  f"failed {stats.failed}")
    for label, n in sorted(stats.published.items()):
        table.add_row(f"  {label}", str(n))
    return table


async def run_devices(host: str, port: int, topic_prefix: str, passwords: Mapping[str, str],
                      streams: Mapping[str, Iterable[Message]], clock: SimClock, *, window: int = 100,
                      connect_concurrency: int = 64, progress: bool = False, title: str = "simulation",
                      stats: RunStats | None = None, tls: ssl.SSLContext | None = None) -> RunStats:
    """Connect every device in ``streams`` and publish its messages on simulated time."""
    stats = stats or RunStats()
    stats.devices = len(streams)
    _raise_fd_limit(len(streams) + 256)
    missing = sorted(set(streams) - set(passwords))
    if missing:
        raise RunnerError(f"no credentials for {len(missing)} device(s), e.g. {missing[0]}")
    console = Console(stderr=True)
    live = Live(stats_table(stats, clock, title), console=console, refresh_per_second=4, transient=False) \
        if progress else None
    async with AsyncExitStack() as stack:
        if live is not None:
            stack.enter_context(live)
        clients = await _connect_all(stack, host, port, passwords, list(streams), stats, connect_concurrency, tls)
        stats.started = time.monotonic()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ticker = asyncio.create_task(_tick(stats, clock, t0, live, title)) if live is not None else None
        try:
            await asyncio.gather(*(_publish_stream(clients[d], topic_prefix, s, clock, t0, stats, window)
                                   for d, s in streams.items()))
        finally:
            stats.finished = time.monotonic()
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            if live is not None:
                live.update(stats_table(stats, clock, title))
    return stats


_UNSUPPORTED_PROTOCOL_VERSION = 132


async def _connect_all(stack: AsyncExitStack, host: str, port: int, passwords: Mapping[str, str],
                       device_ids: list[str], stats: RunStats, concurrency: int,
                       tls: ssl.SSLContext | None) -> dict[str, aiomqtt.Client]:
    gate = asyncio.Semaphore(concurrency)
    clients: dict[str, aiomqtt.Client] = {}

    async def connect(device_id: str) -> None:
        async with gate:
            # MQTT 5 first; a broker that serves only 3.1.1 (NATS) refuses it with "unsupported
            # protocol version" (132), and the device speaks 3.1.1 instead, as field devices do.
            for version in (aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311):
                client = aiomqtt.Client(host, port, username=device_id, password=passwords[device_id],
                                        identifier=device_id, tls_context=tls, protocol=version,
                                        keepalive=60, max_inflight_messages=1000, timeout=30)
                try:
                    await stack.enter_async_context(client)
                    break
                except aiomqtt.MqttCodeError as exc:
                    if version is aiomqtt.ProtocolVersion.V5 and exc.rc == _UNSUPPORTED_PROTOCOL_VERSION:
                        continue
                    raise RunnerError(f"device {device_id} could not connect to {host}:{port}: {exc}") from None
                except aiomqtt.MqttError as exc:
                    raise RunnerError(f"device {device_id} could not connect to {host}:{port}: {exc}") from None
        clients[device_id] = client
        stats.connected += 1

    await asyncio.gather(*(connect(d) for d in device_ids))
    return clients


async def _publish_stream(client: aiomqtt.Client, prefix: str, messages: Iterable[Message], clock: SimClock,
                          t0: float, stats: RunStats, window: int) -> None:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(window)
    pending: set[asyncio.Task[None]] = set()

    async def send(m: Message) -> None:
        try:
            await client.publish(_topic(prefix, m.device_id, m.kind), m.payload, qos=1, timeout=60)
            stats.published[m.label or m.kind] += 1
        except aiomqtt.MqttError:
            stats.failed += 1
        finally:
            stats.in_flight -= 1
            slots.release()

    for m in messages:
        delay = t0 + clock.wall_offset(m.at) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if stats.sim_now is None or m.at > stats.sim_now:
            stats.sim_now = m.at
        await slots.acquire()
        stats.in_flight += 1
        task = asyncio.create_task(send(m))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def _tick(stats: RunStats, clock: SimClock, t0: float, live: Live, title: str) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(0.25)
        now = clock.sim_start + timedelta(seconds=(loop.time() - t0) * clock.speedup)
        stats.sim_now = min(now, clock.sim_end)
        live.update(stats_table(stats, clock, title))

