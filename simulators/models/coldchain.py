"""A temperature/humidity logger in a truck's reefer or a cold room.

The air temperature is the setpoint plus a slow drift (a compressor that loses a little
efficiency over the day, a sinusoid of the defrost cycle), measurement noise, door openings
(warm air rushes in, the unit pulls it back down with a time constant of a few minutes) and
scheduled excursions (a reefer switched off during a driver's break, a failed compressor): a
ramp up to a peak, a plateau, a recovery. Humidity moves inversely with temperature and jumps
when a door opens. Everything is a pure function of the schedule and the seeded noise, so a
scenario knows exactly when the readings cross a profile's limits.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from simulators.messages import Message, MsgIds, dumps, rfc3339


@dataclass(frozen=True, slots=True)
class DoorOpening:
    at: datetime
    seconds: float  # how long the door stays open
    rise_c: float  # how far the air warms while it is open


@dataclass(frozen=True, slots=True)
class Excursion:
    start: datetime
    ramp_s: float
    hold_s: float
    recover_s: float
    peak_c: float  # absolute temperature reached on the plateau

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.ramp_s + self.hold_s + self.recover_s)


@dataclass
class EnvSensorModel:
    device_id: str
    rng: random.Random
    tag: str
    setpoint_c: float = 4.0
    rh_pct: float = 80.0
    every_s: float = 60.0
    noise_c: float = 0.12
    drift_c_per_h: float = 0.05
    cycle_c: float = 0.3  # defrost/compressor cycle amplitude
    cycle_s: float = 3600.0
    probe: str | None = None
    doors: list[DoorOpening] = field(default_factory=list)
    excursions: list[Excursion] = field(default_factory=list)
    ids: MsgIds = field(init=False)

    def __post_init__(self) -> None:
        self.ids = MsgIds(self.tag, "e")

    def _door_effect(self, t: datetime) -> float:
        effect = 0.0
        for d in self.doors:
            since = (t - d.at).total_seconds()
            if since < 0:
                continue
            if since <= d.seconds:
                effect += d.rise_c * since / max(d.seconds, 1.0)
            else:
                effect += d.rise_c * math.exp(-(since - d.seconds) / 120.0)  # pulled down in a few minutes
        return effect

    def _excursion_target(self, t: datetime, base: float) -> float:
        for e in self.excursions:
            s = (t - e.start).total_seconds()
            if s < 0 or t >= e.end:
                continue
            if s < e.ramp_s:
                return base + (e.peak_c - base) * s / e.ramp_s
            if s < e.ramp_s + e.hold_s:
                return e.peak_c
            return e.peak_c + (base - e.peak_c) * (s - e.ramp_s - e.hold_s) / e.recover_s
        return base

    def temperature(self, t: datetime, t0: datetime) -> float:
        """Noise-free air temperature at ``t``."""
        hours = (t - t0).total_seconds() / 3600.0
        base = (self.setpoint_c + self.drift_c_per_h * hours
                + self.cycle_c * math.sin(2 * math.pi * (t - t0).total_seconds() / self.cycle_s))
        return self._excursion_target(t, base) + self._door_effect(t)

    def messages(self, start: datetime, end: datetime) -> list[Message]:
        out: list[Message] = []
        t = start
        while t < end:
            temp = self.temperature(t, start) + self.rng.gauss(0, self.noise_c)
            rh = self.rh_pct - 1.5 * (temp - self.setpoint_c) + 8 * min(1.0, self._door_effect(t)) \
                + self.rng.gauss(0, 0.8)
            body: dict[str, object] = {"msg_id": self.ids.next(), "ts": rfc3339(t), "temp_c": round(temp, 2),
                                       "rh_pct": round(min(100.0, max(0.0, rh)), 1)}
            if self.probe:
                body["probe"] = self.probe
            out.append(Message(t + timedelta(seconds=self.rng.uniform(0.1, 1.5)), self.device_id, "env",
                               dumps(body), "env"))
            t += timedelta(seconds=self.every_s)
        return out
