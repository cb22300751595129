"""Seeded streams of realistic device messages for the replay oracle, and the chaos of delivery.

``generate(seed)`` plays a day at the simulated DC (``normal-day``: handheld scanners receiving,
putting away, counting, picking, loading and returning; an RFID gate; trucks with GPS trackers,
reefer loggers and drivers' scanners; a cold room logger; heartbeats) and adds what that scenario
leaves out: a cold-room logger with two probes (probe B warms past the profile for a while, probe
A does not) and a truck whose tracker and reefer logger lose their modem on the road and flush
their buffers late, as shuffled arrays.

``chaos(stream, seed)`` turns the stream into what an unreliable field delivers: random arrival
order, about 15 % of the messages twice, arrays split into several messages and single messages
merged into arrays (same device, same kind: what the contract allows). The identity of every
object, ``(device_id, msg_id)``, is unchanged: the platform must store the same state whatever
the chaos, and the oracle checks that it does.

Everything is a pure function of the seed and the moment the window ends (``now``); no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Final

import orjson

from core.contract import Limits, Record, decode_payload, parse_topic
from simulators.clock import SimClock
from simulators.messages import Message, MsgIds
from simulators.models.coldchain import DoorOpening, EnvSensorModel, Excursion
from simulators.provision import DeviceDef
from simulators.scenarios import normal_day
from simulators.scenarios import world as w
from simulators.scenarios.base import ScenarioContext, ScenarioOptions
from simulators.scenarios.trips import heartbeats

SPEEDUP: Final = 60.0
FLUSH_CHUNK: Final = 10


@dataclass(frozen=True, slots=True)
class Stream:
    """One simulated day: the master data (as API PUTs), the devices and every message they send,
    in the order the devices publish them."""

    seed: int
    tag: str
    sim_start: datetime
    sim_end: datetime
    master: tuple[tuple[str, Mapping[str, Any]], ...]
    devices: tuple[DeviceDef, ...]
    messages: tuple[Message, ...]
    # What the scenario's own bookkeeping says the balances are (sku, location, lot or ''): an
    # independent check of the replay itself.
    expected_balances: Mapping[tuple[str, str, str], float]

    @property
    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.devices]

    def identities(self) -> set[tuple[str, str]]:
        """``(device_id, msg_id)`` of every object sent."""
        return {(m.device_id, str(obj["msg_id"])) for m in self.messages for obj in objects(m)}


def objects(message: Message) -> list[dict[str, Any]]:
    """The JSON objects of a message: one, or the elements of an array."""
    value = orjson.loads(message.payload)
    return list(value) if isinstance(value, list) else [value]


def run_tag(seed: int, now: datetime) -> str:
    """Letters and digits, distinct per seed and per minute: streams of one run never share ids."""
    return f"o{seed % 10_000:04d}{int(now.timestamp()) // 60 % 100_000:05d}"


def generate(seed: int, *, now: datetime | None = None, trucks: int | None = None, tag: str | None = None) -> Stream:
    """A day of the DC ending at ``now`` (default: the wall clock, so no ``ts`` is in the future).

    ``tag`` (letters and digits, at most 10) names this stream's devices, shipments, lots and
    msg_ids; two streams with different tags never share one. The content depends on ``seed`` only.
    """
    rng = random.Random(f"stream:{seed}")
    trucks = trucks if trucks is not None else rng.choice((1, 2, 2, 3))
    end = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    span_s = normal_day.min_span_s(trucks) + 20 * 60
    clock = SimClock(end - timedelta(seconds=span_s), SPEEDUP, span_s / SPEEDUP)
    tag = (tag or run_tag(seed, end)).lower()
    if not tag.isalnum() or len(tag) > 10:
        raise ValueError(f"stream tag {tag!r} must be 1 to 10 letters and digits")
    options = ScenarioOptions(seed=seed, speedup=SPEEDUP, duration_s=clock.duration_s, devices=trucks, run_id=tag)
    ctx = ScenarioContext(normal_day.NAME, options, clock, tag)
    plan = normal_day.build(ctx)
    # The scenario's DC handhelds are stable devices shared by runs; here every device is the
    # stream's own, so streams never mix histories (nor broker accounts).
    rename = {d.device_id: f"sim-{tag}-{d.device_id.rsplit('-', 1)[-1]}" for d in plan.devices
              if not d.device_id.startswith(f"sim-{tag}-")}
    messages = [replace(m, device_id=rename.get(m.device_id, m.device_id))
                for stream in plan.streams.values() for m in stream]
    devices = [replace(d, device_id=rename.get(d.device_id, d.device_id)) for d in plan.devices]

    probes_id, probe_messages = two_probe_logger(ctx, rng)
    devices.append(DeviceDef(probes_id, {"kind": "env_sensor", "site": w.SITE, "location": w.COLD_ROOM,
                                         "profile": w.CHILLED}))
    messages += probe_messages
    # Most days the first truck's reefer fails on the road (a temperature excursion on the
    # shipment, so an alarm and a ticket); its modem fails too: tracker and reefer logger buffer,
    # then flush late.
    if rng.random() < 0.7:
        fails_at = ctx.at(100 + rng.uniform(0, 10))
        messages = warm_up(messages, f"sim-{tag}-rf1",
                           Excursion(fails_at, ramp_s=300.0, hold_s=rng.uniform(12, 20) * 60, recover_s=480.0,
                                     peak_c=rng.uniform(10.0, 13.0)))
    offline = (ctx.at(95 + rng.uniform(0, 10)), ctx.at(125 + rng.uniform(0, 15)))
    messages = buffer_offline(messages, {f"sim-{tag}-trk1", f"sim-{tag}-rf1"}, offline, rng)
    messages = [m for m in messages if m.at <= clock.sim_end]
    messages.sort(key=lambda m: (m.at, m.device_id))
    return Stream(seed, tag, clock.sim_start, clock.sim_end, tuple(plan.master), tuple(devices), tuple(messages),
                  dict(plan.expected["balances"]))


def two_probe_logger(ctx: ScenarioContext, rng: random.Random) -> tuple[str, list[Message]]:
    """A cold-room logger with two probes at the same instants: A near the evaporator stays cold,
    B by the door warms past 8 °C for longer than the profile's delay (or, for some seeds, not)."""
    device_id = f"sim-{ctx.tag}-cold2"
    start, end = ctx.clock.sim_start, ctx.clock.sim_end
    hold_s = rng.choice((5 * 60.0, 20 * 60.0, 35 * 60.0))  # shorter and longer than the 10-minute delay
    excursion = Excursion(ctx.at(rng.uniform(40, 120)), ramp_s=300.0, hold_s=hold_s, recover_s=600.0,
                          peak_c=rng.uniform(9.0, 11.0))
    out: list[Message] = []
    for probe, setpoint, excursions in (("A", 4.0, []), ("B", 5.0, [excursion])):
        model = EnvSensorModel(device_id, ctx.rng(f"probe{probe}"), ctx.tag, setpoint_c=setpoint, every_s=60.0,
                               probe=probe, excursions=excursions,
                               doors=[DoorOpening(ctx.at(rng.uniform(10, 200)), 60.0, 2.0)])
        model.ids = MsgIds(ctx.tag, f"e{probe}")  # one device, two probes: msg_ids must not collide
        out += model.messages(start, end)
    out += heartbeats(ctx, device_id, battery=rng.uniform(20.0, 90.0), drain=1.0)
    return device_id, out


def warm_up(messages: Sequence[Message], device_id: str, e: Excursion) -> list[Message]:
    """The device's temperatures pulled up to the excursion's profile (ramp, plateau, recovery):
    a reefer unit failing and coming back, on top of the logger's own noise and door openings."""

    def target(ts: datetime) -> float | None:
        s = (ts - e.start).total_seconds()
        if s < 0 or ts >= e.end:
            return None
        if s < e.ramp_s:
            return e.peak_c * s / e.ramp_s
        if s < e.ramp_s + e.hold_s:
            return e.peak_c
        return e.peak_c * (1 - (s - e.ramp_s - e.hold_s) / e.recover_s)

    out = []
    for m in messages:
        if m.device_id != device_id or m.kind != "env":
            out.append(m)
            continue
        body = orjson.loads(m.payload)
        warm = target(datetime.fromisoformat(body["ts"]))
        if warm is not None and body.get("temp_c") is not None:
            body["temp_c"] = round(max(body["temp_c"], warm), 2)
        out.append(replace(m, payload=orjson.dumps(body)))
    return out


def buffer_offline(messages: Sequence[Message], devices: set[str], window: tuple[datetime, datetime],
                   rng: random.Random) -> list[Message]:
    """The devices' messages published inside ``window`` are kept back and sent when it ends, as
    arrays of up to ``FLUSH_CHUNK`` objects of one kind, chunks in shuffled order."""
    kept: dict[tuple[str, str], list[Any]] = {}
    out: list[Message] = []
    for m in messages:
        if m.device_id in devices and window[0] <= m.at < window[1]:
            kept.setdefault((m.device_id, m.kind), []).extend(objects(m))
        else:
            out.append(m)
    for (device_id, kind), objs in sorted(kept.items()):
        chunks = [objs[i:i + FLUSH_CHUNK] for i in range(0, len(objs), FLUSH_CHUNK)]
        rng.shuffle(chunks)
        at = window[1]
        for chunk in chunks:
            at += timedelta(seconds=rng.uniform(0.5, 2.0))
            out.append(Message(at, device_id, kind, orjson.dumps(chunk), f"{kind}:backlog"))
    return out


def decode_messages(messages: Iterable[Message], prefix: str, received_at: datetime) -> list[Record]:
    """The contract records of the messages, as ingest decodes them (rejections dropped: they are
    dead letters on both sides)."""
    out: list[Record] = []
    for m in messages:
        topic = parse_topic(f"{prefix}/dev/{m.device_id}/{m.kind}", prefix)
        if isinstance(topic, tuple):
            out.extend(decode_payload(orjson.loads(m.payload), topic[0], topic[1], received_at, Limits()).records)
    return out


# --- chaos ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chaos:
    duplicate_rate: float = 0.15
    split_rate: float = 0.6  # of arrays: split into several messages
    merge_rate: float = 0.2  # of single objects: merged with the device's next ones into an array


def chaos(messages: Sequence[Message], seed: int, config: Chaos | None = None) -> list[Message]:
    """The same objects as the field may deliver them: regrouped, duplicated, in random order."""
    config = config or Chaos()
    rng = random.Random(f"chaos:{seed}")
    regrouped: list[Message] = []
    pending: dict[tuple[str, str], list[Any]] = {}  # singles being merged, per device and kind

    def flush(key: tuple[str, str], at: datetime) -> None:
        objs = pending.pop(key, [])
        if objs:
            regrouped.append(Message(at, key[0], key[1], _payload(objs), f"{key[1]}:merged"))

    for m in messages:
        value = orjson.loads(m.payload)
        key = (m.device_id, m.kind)
        if isinstance(value, list):
            flush(key, m.at)
            if len(value) > 1 and rng.random() < config.split_rate:
                regrouped += [Message(m.at, m.device_id, m.kind, _payload(part), f"{m.kind}:split")
                              for part in _split(value, rng)]
            else:
                regrouped.append(m)
        elif key in pending or rng.random() < config.merge_rate:
            pending.setdefault(key, []).append(value)
            if len(pending[key]) >= rng.randint(2, 5):
                flush(key, m.at)
        else:
            regrouped.append(m)
    for key in sorted(pending):
        flush(key, messages[-1].at if messages else datetime.now(UTC))
    delivered = list(regrouped)
    delivered += [m for m in regrouped if rng.random() < config.duplicate_rate]
    rng.shuffle(delivered)
    return delivered


def _payload(objs: list[Any]) -> bytes:
    return orjson.dumps(objs[0] if len(objs) == 1 else objs)


def _split(values: list[Any], rng: random.Random) -> list[list[Any]]:
    cuts = sorted(rng.sample(range(1, len(values)), k=min(len(values) - 1, rng.randint(1, 3))))
    bounds = [0, *cuts, len(values)]
    return [values[a:b] for a, b in pairwise(bounds)]
