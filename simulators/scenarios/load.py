"""``load``: N devices publishing R messages a second in total, for load tests.

80 % env sensors (readings every N/R seconds each, no profile, so no alarm rules fire) and 20 %
GPS trackers (a random walk around the DC at 30-60 km/h, no vehicle, so no shipment rules), each
over its own connection, QoS 1, PUBACKs counted. Device ids are stable (``sim-load-env-0001``,
``sim-load-trk-0001``): a rerun rotates their passwords instead of creating new accounts.

Afterwards the report gives the achieved rate and the acknowledged count; the platform holds
one env reading or position per acknowledged message.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import timedelta

from simulators.messages import Message, MsgIds, dumps, epoch_ms, rfc3339
from simulators.provision import DeviceDef
from simulators.scenarios import world as w
from simulators.scenarios.base import ScenarioContext, ScenarioPlan

NAME = "load"


def device_ids(n: int) -> list[str]:
    trackers = n // 5
    return ([f"sim-load-env-{i:04d}" for i in range(1, n - trackers + 1)]
            + [f"sim-load-trk-{i:04d}" for i in range(1, trackers + 1)])


def _env(ctx: ScenarioContext, device_id: str, every_s: float, count: int, rng: random.Random) -> Iterator[Message]:
    ids = MsgIds(ctx.tag)
    t0 = ctx.clock.sim_start + timedelta(seconds=rng.uniform(0, every_s))
    setpoint = rng.choice((4.0, 4.0, -20.0, 18.0))
    for i in range(count):
        at = t0 + timedelta(seconds=i * every_s)
        temp = setpoint + 0.3 * math.sin(i / 30) + rng.gauss(0, 0.1)
        yield Message(at, device_id, "env", dumps({"msg_id": ids.next(), "ts": rfc3339(at),
                                                   "temp_c": round(temp, 2), "rh_pct": round(rng.uniform(60, 90), 1)}),
                      "env")


def _tracker(ctx: ScenarioContext, device_id: str, every_s: float, count: int,
             rng: random.Random) -> Iterator[Message]:
    ids = MsgIds(ctx.tag)
    t0 = ctx.clock.sim_start + timedelta(seconds=rng.uniform(0, every_s))
    lat, lon = w.DC_CENTRE.lat + rng.uniform(-0.05, 0.05), w.DC_CENTRE.lon + rng.uniform(-0.08, 0.08)
    heading = rng.uniform(0, 360)
    for i in range(count):
        at = t0 + timedelta(seconds=i * every_s)
        speed = rng.uniform(30, 60)
        heading = (heading + rng.gauss(0, 15)) % 360
        step_m = speed / 3.6 * min(every_s, 60.0)  # keep the walk within reach of the DC
        lat += step_m * math.cos(math.radians(heading)) / 111_320
        lon += step_m * math.sin(math.radians(heading)) / (111_320 * math.cos(math.radians(lat)))
        yield Message(at, device_id, "position", dumps({
            "msg_id": ids.next(), "ts": epoch_ms(at), "lat": round(lat, 6), "lon": round(lon, 6),
            "speed_kmh": round(speed, 1), "heading_deg": round(heading, 1)}), "position")


def build(ctx: ScenarioContext) -> ScenarioPlan:
    n = ctx.options.devices or 50
    rate = ctx.options.rate or 100.0
    if n < 1 or rate <= 0:
        raise ValueError("load needs --devices >= 1 and --rate > 0")
    wall_every = n / rate  # each device's interval in wall seconds
    sim_every = wall_every * ctx.clock.speedup
    count = max(1, int(ctx.clock.duration_s / wall_every))
    devices: list[DeviceDef] = []
    streams: dict[str, Iterator[Message]] = {}
    for device_id in device_ids(n):
        rng = ctx.rng(device_id)
        if "-trk-" in device_id:
            devices.append(DeviceDef(device_id, {"kind": "gps_tracker", "site": w.SITE}))
            streams[device_id] = _tracker(ctx, device_id, sim_every, count, rng)
        else:
            devices.append(DeviceDef(device_id, {"kind": "env_sensor", "site": w.SITE}))
            streams[device_id] = _env(ctx, device_id, sim_every, count, rng)
    total = count * n
    expected = {"messages": total, "rate": rate, "devices": [d.device_id for d in devices], "alarms": [],
                "dead_letters": {}}
    shows = [f"{n} devices, {rate:g} msg/s for {ctx.clock.duration_s:g} s: {total} messages",
             "one env reading or position per acknowledged message; no alarms, no dead letters"]
    return ScenarioPlan(w.master_data(), devices, streams, expected, shows, total)
